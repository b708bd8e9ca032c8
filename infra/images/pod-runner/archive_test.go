package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"os/exec"
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

// testdata/state-from-ts.tar.gz was written by the TypeScript packer of earlier versions: state versions it stored must still restore.
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

// headers lists an archive's entries as name → header.
func headers(t *testing.T, archive []byte) map[string]*tar.Header {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	must(t, err)
	tr := tar.NewReader(gz)
	out := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		out[h.Name] = h
	}
	return out
}

func rawMode(t *testing.T, p string) uint32 {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(p, &st))
	return st.Mode & 0o7777
}

// A mode of 000 is a mode like any other: not taken for "no mode" and replaced, packing or unpacking.
func TestArchiveKeepsZeroModes(t *testing.T) {
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "locked"), []byte("l"), 0o644))
	must(t, os.Mkdir(filepath.Join(src, "closed"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "closed/inside"), []byte("i"), 0o640))
	must(t, syscall.Chmod(filepath.Join(src, "locked"), 0))
	must(t, syscall.Chmod(filepath.Join(src, "closed"), 0))
	archive, _ := packToBytes(t, src)
	must(t, syscall.Chmod(filepath.Join(src, "closed"), 0o755)) // so t.TempDir can clean up
	h := headers(t, archive)
	if h["locked"].Mode != 0 || h["closed/"].Mode != 0 || h["closed/inside"].Mode != 0o640 {
		t.Errorf("archived modes %o %o %o", h["locked"].Mode, h["closed/"].Mode, h["closed/inside"].Mode)
	}
	dst := t.TempDir()
	if w, err := unpackBytes(dst, archive); err != nil || len(w) > 0 {
		t.Fatal(w, err)
	}
	if m := rawMode(t, filepath.Join(dst, "locked")); m != 0 {
		t.Errorf("file restored %o", m)
	}
	if m := rawMode(t, filepath.Join(dst, "closed")); m != 0 {
		t.Errorf("folder restored %o", m)
	}
	// The folder's mode came last: what is in it was restored first.
	if b, err := os.ReadFile(filepath.Join(dst, "closed/inside")); err != nil || string(b) != "i" {
		t.Errorf("inside the closed folder: %q %v", b, err)
	}
	must(t, syscall.Chmod(filepath.Join(dst, "closed"), 0o755))
}

func TestArchiveDropsSetuidAndSetgidKeepsSticky(t *testing.T) {
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "suid"), []byte("#!/bin/sh"), 0o755))
	must(t, syscall.Chmod(filepath.Join(src, "suid"), 0o6755))
	must(t, os.Mkdir(filepath.Join(src, "sgid"), 0o755))
	must(t, syscall.Chmod(filepath.Join(src, "sgid"), 0o2775))
	must(t, os.Mkdir(filepath.Join(src, "tmp"), 0o755))
	must(t, syscall.Chmod(filepath.Join(src, "tmp"), 0o1777))
	h := headers(t, func() []byte { a, _ := packToBytes(t, src); return a }())
	if h["suid"].Mode != 0o755 || h["sgid/"].Mode != 0o775 || h["tmp/"].Mode != 0o1777 {
		t.Errorf("packed modes %o %o %o", h["suid"].Mode, h["sgid/"].Mode, h["tmp/"].Mode)
	}

	// An archive made elsewhere with the bits set: they are not restored either.
	dst := t.TempDir()
	_, err := unpackBytes(dst, hostile(t,
		tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755},
		tar.Header{Name: "sgid-file", Typeflag: tar.TypeReg, Mode: 0o2750},
		tar.Header{Name: "sgid/", Typeflag: tar.TypeDir, Mode: 0o2775},
		tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}))
	must(t, err)
	for name, want := range map[string]uint32{"suid": 0o755, "sgid-file": 0o750, "sgid": 0o775, "tmp": 0o1777} {
		if m := rawMode(t, filepath.Join(dst, name)); m != want {
			t.Errorf("%s restored %o, want %o", name, m, want)
		}
	}
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func ownerOf(t *testing.T, p string) string {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(p, &st))
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

func TestArchiveKeepsOwners(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	must(t, os.Mkdir(filepath.Join(src, "d"), 0o750))
	must(t, os.WriteFile(filepath.Join(src, "d/f"), []byte("x"), 0o640))
	must(t, os.Symlink("d/f", filepath.Join(src, "l")))
	must(t, os.WriteFile(filepath.Join(src, "root"), []byte("r"), 0o644))
	must(t, os.Lchown(filepath.Join(src, "d"), 1001, 1002))
	must(t, os.Lchown(filepath.Join(src, "d/f"), 1003, 1004))
	must(t, os.Lchown(filepath.Join(src, "l"), 1005, 1006))
	archive, _ := packToBytes(t, src)
	h := headers(t, archive)
	for name, want := range map[string]string{"d/": "1001:1002", "d/f": "1003:1004", "l": "1005:1006", "root": "0:0"} {
		if got := fmt.Sprintf("%d:%d", h[name].Uid, h[name].Gid); got != want {
			t.Errorf("%s archived as %s, want %s", name, got, want)
		}
	}
	dst := t.TempDir()
	if w, err := unpackBytes(dst, archive); err != nil || len(w) > 0 {
		t.Fatal(w, err)
	}
	for name, want := range map[string]string{"d": "1001:1002", "d/f": "1003:1004", "l": "1005:1006", "root": "0:0"} {
		if got := ownerOf(t, filepath.Join(dst, name)); got != want {
			t.Errorf("%s restored as %s, want %s", name, got, want)
		}
	}
	// The link's own owner was set, not its target's.
	if got := ownerOf(t, filepath.Join(dst, "d/f")); got != "1003:1004" {
		t.Errorf("the link's target is owned by %s", got)
	}
	if m := rawMode(t, filepath.Join(dst, "d")); m != 0o750 {
		t.Errorf("folder mode %o after its owner was set", m)
	}
}

// Not root, the runner cannot give entries to others: they keep its user, and one warning says so.
func TestUnpackAsAnotherUserWarnsOnceAboutOwners(t *testing.T) {
	if dir := os.Getenv("POD_RUNNER_TEST_UNPACK_INTO"); dir != "" { // the unprivileged side, in a child process
		archive, err := os.ReadFile(filepath.Join(dir, "archive.tar.gz"))
		must(t, err)
		warnings, err := unpackBytes(filepath.Join(dir, "state"), archive)
		must(t, err)
		fmt.Printf("WARNINGS %q\n", warnings)
		return
	}
	requireRoot(t)
	dir, err := os.MkdirTemp("", "gg-owners-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	archive := hostile(t,
		tar.Header{Name: "a", Typeflag: tar.TypeReg, Uid: 0, Gid: 0},
		tar.Header{Name: "b/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1234, Gid: 1234},
		tar.Header{Name: "b/c", Typeflag: tar.TypeReg, Uid: 65534, Gid: 65534},
		tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "a", Mode: 0o777},
		// Filled before its mode is applied: not being root, the runner could not write in it afterwards.
		tar.Header{Name: "ro/", Typeflag: tar.TypeDir, Mode: 0o555, Uid: 65534, Gid: 65534},
		tar.Header{Name: "ro/f", Typeflag: tar.TypeReg, Uid: 65534, Gid: 65534})
	must(t, os.WriteFile(filepath.Join(dir, "archive.tar.gz"), archive, 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "state"), 0o755))
	must(t, os.Chown(filepath.Join(dir, "state"), 65534, 65534))
	// A copy of this test binary the other user may run (the build folder is root's alone).
	self, err := os.ReadFile(os.Args[0])
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "test"), self, 0o755))
	cmd := exec.Command(filepath.Join(dir, "test"), "-test.run=^TestUnpackAsAnotherUserWarnsOnceAboutOwners$")
	cmd.Env = append(os.Environ(), "POD_RUNNER_TEST_UNPACK_INTO="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// b/c and ro are the runner's own user's already; a, b and the link l are not: 3 refusals, one warning.
	want := `WARNINGS ["the owners of 3 restored entries could not be set (first: a: fchown ` + filepath.Join(dir, "state", "a") + `: operation not permitted); they belong to the runner's user"]`
	if !strings.Contains(string(out), want) {
		t.Errorf("output:\n%s\nwant %s", out, want)
	}
	if m := rawMode(t, filepath.Join(dir, "state", "ro")); m != 0o555 {
		t.Errorf("ro restored %o", m)
	}
	for _, name := range []string{"a", "b", "b/c", "l", "ro/f"} {
		if got := ownerOf(t, filepath.Join(dir, "state", name)); got != "65534:65534" {
			t.Errorf("%s owned by %s", name, got)
		}
	}
}
