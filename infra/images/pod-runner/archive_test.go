package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func packToBytes(t *testing.T, dir string) ([]byte, []string) {
	t.Helper()
	var buf bytes.Buffer
	var warnings []string
	if err := packState(dir, &buf, func(w string) { warnings = append(warnings, w) }); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), warnings
}

func unpackBytes(dir string, archive []byte) ([]string, error) {
	var warnings []string
	err := unpackState(dir, bytes.NewReader(archive), func(w string) { warnings = append(warnings, w) })
	return warnings, err
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	info, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode()
}

func TestArchiveRoundTrip(t *testing.T) {
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "a/b"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "a/b/file"), []byte("content"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "exec"), []byte("#!/bin/sh"), 0o755))
	must(t, os.Chmod(filepath.Join(src, "exec"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "private"), []byte("p"), 0o600))
	must(t, os.WriteFile(filepath.Join(src, "empty"), nil, 0o644))
	must(t, os.Symlink("/etc/passwd", filepath.Join(src, "host-link")))
	long := strings.Repeat("long-folder-name/", 8) + strings.Repeat("n", 90)
	must(t, os.MkdirAll(filepath.Join(src, filepath.Dir(long)), 0o755))
	must(t, os.WriteFile(filepath.Join(src, long), []byte("deep"), 0o644))
	must(t, os.Symlink(strings.Repeat("../", 60)+"target", filepath.Join(src, "long-link")))
	must(t, os.Mkdir(filepath.Join(src, "read-only"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "read-only/inside"), []byte("i"), 0o644))
	must(t, os.Chmod(filepath.Join(src, "read-only"), 0o555))
	must(t, syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644))

	archive, warnings := packToBytes(t, src)
	if len(warnings) != 1 || warnings[0] != "fifo is not a file, folder or link (a FIFO, socket or device); not archived" {
		t.Errorf("warnings: %q", warnings)
	}
	dst := t.TempDir()
	if w, err := unpackBytes(dst, archive); err != nil || len(w) > 0 {
		t.Fatal(w, err)
	}
	for name, want := range map[string]string{"a/b/file": "content", "exec": "#!/bin/sh", "empty": "", long: "deep", "read-only/inside": "i"} {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	if m := mode(t, filepath.Join(dst, "exec")).Perm(); m != 0o755 {
		t.Errorf("exec mode %o", m)
	}
	if m := mode(t, filepath.Join(dst, "private")).Perm(); m != 0o600 {
		t.Errorf("private mode %o", m)
	}
	if m := mode(t, filepath.Join(dst, "read-only")).Perm(); m != 0o555 {
		t.Errorf("read-only folder mode %o", m)
	}
	if target, err := os.Readlink(filepath.Join(dst, "host-link")); err != nil || target != "/etc/passwd" {
		t.Errorf("link: %q %v", target, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "long-link")); err != nil || target != strings.Repeat("../", 60)+"target" {
		t.Errorf("long link: %q %v", target, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "fifo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fifo restored: %v", err)
	}
	must(t, os.Chmod(filepath.Join(src, "read-only"), 0o755)) // so t.TempDir can clean up
	must(t, os.Chmod(filepath.Join(dst, "read-only"), 0o755))
}

func TestArchiveNamesAndTypes(t *testing.T) {
	src := t.TempDir()
	must(t, os.Mkdir(filepath.Join(src, "d"), 0o750))
	must(t, os.WriteFile(filepath.Join(src, "d/f"), []byte("x"), 0o640))
	must(t, os.Symlink("d", filepath.Join(src, "l")))
	archive, _ := packToBytes(t, src)
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var got []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		got = append(got, fmt.Sprintf("%c %s %s %o", h.Typeflag, h.Name, h.Linkname, h.Mode))
	}
	want := []string{"5 d/  750", "0 d/f  640", "2 l d 777"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("entries %q, want %q", got, want)
	}
}

func hostile(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range entries {
		body := []byte("x")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		must(t, tw.WriteHeader(&h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write(body)
			must(t, err)
		}
	}
	must(t, tw.Close())
	must(t, gz.Close())
	return buf.Bytes()
}

func TestUnpackRefusesHostileArchives(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(root, "outside")
	must(t, os.Mkdir(outside, 0o755))
	abs := filepath.Join(root, "absolute-evil")
	for what, archive := range map[string][]byte{
		"a ../ path":                  hostile(t, tar.Header{Name: "../evil", Typeflag: tar.TypeReg}),
		"a ../ path inside":           hostile(t, tar.Header{Name: "a/../../evil", Typeflag: tar.TypeReg}),
		"an absolute path":            hostile(t, tar.Header{Name: abs, Typeflag: tar.TypeReg}),
		"a file through a link":       hostile(t, tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside}, tar.Header{Name: "out/evil", Typeflag: tar.TypeReg}),
		"a folder through a link":     hostile(t, tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside}, tar.Header{Name: "out/evil/", Typeflag: tar.TypeDir}),
		"a link through a link":       hostile(t, tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside}, tar.Header{Name: "out/evil", Typeflag: tar.TypeSymlink, Linkname: "/"}),
		"a write through an own link": hostile(t, tar.Header{Name: "real/", Typeflag: tar.TypeDir}, tar.Header{Name: "in", Typeflag: tar.TypeSymlink, Linkname: "real"}, tar.Header{Name: "in/evil", Typeflag: tar.TypeReg}),
		"a file over a link":          hostile(t, tar.Header{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: filepath.Join(outside, "evil")}, tar.Header{Name: "evil", Typeflag: tar.TypeReg}),
	} {
		dst := filepath.Join(root, strings.NewReplacer(" ", "-", "/", "").Replace(what))
		must(t, os.Mkdir(dst, 0o755))
		if _, err := unpackBytes(dst, archive); err == nil {
			t.Errorf("%s: accepted", what)
		}
		for _, p := range []string{filepath.Join(root, "evil"), abs, filepath.Join(outside, "evil")} {
			if _, err := os.Lstat(p); err == nil {
				t.Fatalf("%s: %s was written", what, p)
			}
		}
		if _, err := os.Lstat(filepath.Join(dst, "real/evil")); err == nil {
			t.Errorf("%s: written through a link", what)
		}
	}
}

func TestUnpackReportsOtherTypesAndRefusesCutArchives(t *testing.T) {
	dst := t.TempDir()
	warnings, err := unpackBytes(dst, hostile(t, tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "x"}, tar.Header{Name: "ok", Typeflag: tar.TypeReg}))
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "hard") {
		t.Errorf("%q %v", warnings, err)
	}
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "f"), bytes.Repeat([]byte("abcdefgh"), 50_000), 0o644))
	archive, _ := packToBytes(t, src)
	if _, err := unpackBytes(t.TempDir(), archive[:len(archive)/2]); err == nil {
		t.Error("a cut archive was accepted")
	}
	if _, err := unpackBytes(t.TempDir(), archive[:len(archive)-4]); err == nil {
		t.Error("an archive without its gzip trailer was accepted")
	}
}

func TestSparseFilesStaySparse(t *testing.T) {
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "disk.img"))
	must(t, err)
	const size = 64 << 20
	_, err = f.WriteAt([]byte("start"), 0)
	must(t, err)
	_, err = f.WriteAt([]byte("middle"), 32<<20)
	must(t, err)
	must(t, f.Truncate(size))
	must(t, f.Close())
	archive, _ := packToBytes(t, src)
	dst := t.TempDir()
	if _, err := unpackBytes(dst, archive); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dst, "disk.img"))
	must(t, err)
	want, _ := os.ReadFile(filepath.Join(src, "disk.img"))
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	var st syscall.Stat_t
	must(t, syscall.Stat(filepath.Join(dst, "disk.img"), &st))
	if st.Size != size || st.Blocks*512 > 1<<20 {
		t.Errorf("size %d, %d bytes allocated: not sparse", st.Size, st.Blocks*512)
	}
}

func TestWriteSparseKeepsDataBlocks(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	must(t, err)
	defer f.Close()
	content := make([]byte, 3*sparseBlock+10)
	content[sparseBlock+5] = 1
	content[len(content)-1] = 2
	must(t, writeSparse(f, bytes.NewReader(content)))
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, content) {
		t.Error("content differs")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testdata/state-from-ts.tar.gz was written by the Docker adapter's packState (testdata/gen-state-from-ts.ts; `npm run parity-vectors`).
func TestUnpackWhatTypeScriptPacks(t *testing.T) {
	archive, err := os.ReadFile("testdata/state-from-ts.tar.gz")
	must(t, err)
	dst := t.TempDir()
	if w, err := unpackBytes(dst, archive); err != nil || len(w) > 0 {
		t.Fatal(w, err)
	}
	long := strings.Repeat("long-folder-name/", 8) + strings.Repeat("n", 90)
	for name, want := range map[string]string{long: "deep", "a/b/file": "content", "exec": "#!/bin/sh\n", "empty": "", "é-😀.txt": "unicode", "zeros": string(make([]byte, 200*1024))} {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	if m := mode(t, filepath.Join(dst, "exec")).Perm(); m != 0o750 {
		t.Errorf("exec mode %o", m)
	}
	for name, want := range map[string]string{"host-link": "/etc/passwd", "long-link": strings.Repeat("../", 60) + "target"} {
		if got, err := os.Readlink(filepath.Join(dst, name)); err != nil || got != want {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
}
