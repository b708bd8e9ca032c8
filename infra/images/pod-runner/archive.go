package main

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf16"
	"unsafe"
)

// gzipLevel: zlib's default, a balance of size and speed for state that is mostly text.
const gzipLevel = 6

// keptModeBits are the mode bits archived and restored: permissions and the sticky bit. Setuid and setgid
// are dropped both ways: a restored file must not run as its owner (often root) for whoever runs it.
const keptModeBits = 0o1777

// packState writes dir as tar + gzip: paths relative to dir, regular
// files with their modes (exactly, 000 included, without setuid/setgid) and owners, folders (names ending
// in /), symbolic links stored as links and never followed; FIFOs, sockets and devices are skipped with a
// warning. Files are opened without following links and must still be regular files once open.
func packState(dir string, out io.Writer, warn func(string)) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	gz, err := gzip.NewWriterLevel(out, gzipLevel)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	if err := packDir(root, dir, "", tw, warn); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func packDir(root *os.Root, dir, rel string, tw *tar.Writer, warn func(string)) error {
	d, err := root.Open(cmp(rel, "."))
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	slices.SortFunc(names, jsCompare)
	for _, name := range names {
		relPath := name
		if rel != "" {
			relPath = rel + "/" + name
		}
		info, err := root.Lstat(relPath)
		if err != nil {
			return err
		}
		uid, gid := owner(info)
		hdr := &tar.Header{Name: relPath, Mode: int64(unixMode(info) & keptModeBits), Uid: uid, Gid: gid, ModTime: info.ModTime().Truncate(time.Second)}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(dir, relPath))
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		case info.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, relPath+"/"
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if err := packDir(root, dir, relPath, tw, warn); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := packFile(root, relPath, hdr, tw, warn); err != nil {
				return err
			}
		default:
			warn(relPath + " is not a file, folder or link (a FIFO, socket or device); not archived")
		}
	}
	return nil
}

func packFile(root *os.Root, relPath string, hdr *tar.Header, tw *tar.Writer, warn func(string)) error {
	f, err := root.OpenFile(relPath, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	opened, err := f.Stat()
	if err != nil {
		return err
	}
	if !opened.Mode().IsRegular() {
		warn(relPath + " changed into something other than a file while being archived; skipped")
		return nil
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, opened.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, io.LimitReader(f, hdr.Size))
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("%s shrank while being archived", relPath)
	}
	return nil
}

func unixMode(info fs.FileInfo) uint32 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Mode
	}
	return uint32(info.Mode().Perm())
}

func owner(info fs.FileInfo) (uid, gid int) {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return 0, 0
}

func cmp(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// jsCompare orders names like JavaScript's default sort (UTF-16 code units), as readdir().sort() does.
func jsCompare(a, b string) int {
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

// safeRelative keeps entry names inside the folder they are restored into.
func safeRelative(name string) (string, bool) {
	trimmed := strings.TrimRight(name, "/")
	if trimmed == "" {
		return "", false
	}
	clean := path.Clean(trimmed)
	if clean == "." || strings.HasPrefix(clean, "/") || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", false
	}
	return clean, true
}

// damagedArchive tells an archive that cannot be restored as it is (refused, not gzip, not tar, cut short)
// from a download that broke or a folder that could not be written.
func damagedArchive(err error) bool {
	var ne *netError
	if errors.As(err, &ne) {
		return false
	}
	var r *refusal
	return errors.As(err, &r) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) ||
		errors.Is(err, tar.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) || isCorruptInput(err)
}

func isCorruptInput(err error) bool {
	var c flate.CorruptInputError
	return errors.As(err, &c)
}

// refusal is an archive the runner will not restore: it would write outside the folder or through a link.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

// assertRealParents refuses to restore through a link: every folder on the way must be a real folder.
func assertRealParents(root *os.Root, rel string) error {
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		current := strings.Join(parts[:i], "/")
		info, err := root.Lstat(current)
		if err != nil && errors.Is(err, fs.ErrNotExist) {
			return &refusal{fmt.Sprintf("archive entry '%s' comes before its folder %s", rel, current)}
		}
		if err != nil || !info.IsDir() {
			return &refusal{fmt.Sprintf("refusing to restore through %s: not a real folder", current)}
		}
	}
	return nil
}

// unpackState restores an archive made by packState (or the TypeScript packer of earlier versions) into an empty folder,
// writing nothing outside it and never through a link. Entries that are neither files, folders nor links
// are reported through warn. Modes are restored exactly (setuid and setgid dropped), folder modes last, so a
// read-only folder can still be filled. Owners are restored where the runner may set them (as root); where
// it may not, entries keep the runner's own, with one warning.
func unpackState(dir string, archive io.Reader, warn func(string)) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	gz, err := gzip.NewReader(archive)
	if err != nil {
		return fmt.Errorf("reading the state archive: %w", err)
	}
	tr := tar.NewReader(gz)
	type dirMode struct {
		rel      string
		mode     uint32
		uid, gid int
	}
	var dirs []dirMode
	owners := &ownerSetter{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return fmt.Errorf("reading the state archive: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		rel, ok := safeRelative(hdr.Name)
		if !ok {
			return &refusal{fmt.Sprintf("archive entry '%s' points outside the state folder", hdr.Name)}
		}
		if err := assertRealParents(root, rel); err != nil {
			return err
		}
		mode := uint32(hdr.Mode) & keptModeBits
		switch hdr.Typeflag {
		case tar.TypeDir:
			info, err := root.Lstat(rel)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				if err := root.Mkdir(rel, 0o700); err != nil {
					return err
				}
			case err != nil:
				return err
			case !info.IsDir():
				return &refusal{fmt.Sprintf("archive entry '%s' is a folder, but something else of that name was restored", rel)}
			}
			dirs = append(dirs, dirMode{rel, mode, hdr.Uid, hdr.Gid})
		case tar.TypeReg:
			if err := restoreFile(root, rel, mode, hdr.Uid, hdr.Gid, owners, tr); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := symlinkIn(root, rel, hdr.Linkname, hdr.Uid, hdr.Gid, owners); err != nil {
				return fmt.Errorf("restoring %s: %w", rel, err)
			}
		default:
			warn(fmt.Sprintf("%s in the restored archive is not a file, folder or link (tar type %q); not restored", rel, hdr.Typeflag))
		}
	}
	// Reading to the end checks the gzip trailer: a cut or corrupted archive is refused.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return fmt.Errorf("reading the state archive: %w", err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := finishDir(root, dirs[i].rel, dirs[i].mode, dirs[i].uid, dirs[i].gid, owners); err != nil {
			return err
		}
	}
	if w := owners.warning(); w != "" {
		warn(w)
	}
	return nil
}

// ownerSetter sets restored entries' owners. Refused (EPERM: the runner is not root; EINVAL: an owner its
// user namespace cannot map), an entry keeps the runner's user, and the refusals make one warning in all.
type ownerSetter struct {
	refused int
	first   error
}

func (o *ownerSetter) set(rel string, chown func() error) error {
	err := chown()
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
		o.refused++
		if o.first == nil {
			o.first = fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("setting the owner of %s: %w", rel, err)
	}
	return nil
}

func (o *ownerSetter) warning() string {
	if o.refused == 0 {
		return ""
	}
	return fmt.Sprintf("the owners of %d restored entries could not be set (first: %v); they belong to the runner's user", o.refused, o.first)
}

func restoreFile(root *os.Root, rel string, mode uint32, uid, gid int, owners *ownerSetter, content io.Reader) error {
	// O_EXCL never follows a link (os.Root adds O_NOFOLLOW too): an existing name is an error.
	f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restoring %s: %w", rel, err)
	}
	defer f.Close()
	if err := writeSparse(f, content); err != nil {
		return fmt.Errorf("restoring %s: %w", rel, err)
	}
	// The owner before the mode: a chown may clear mode bits.
	if err := owners.set(rel, func() error { return fchown(f, uid, gid) }); err != nil {
		return err
	}
	if err := fchmod(f, mode); err != nil {
		return err
	}
	return f.Close()
}

// finishDir sets a restored folder's owner and mode, once everything in it is restored.
func finishDir(root *os.Root, rel string, mode uint32, uid, gid int, owners *ownerSetter) error {
	info, err := root.Lstat(rel)
	if err != nil {
		return err
	}
	if !info.IsDir() || info.Mode()&fs.ModeSymlink != 0 {
		return &refusal{fmt.Sprintf("%s changed while being restored", rel)}
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := owners.set(rel, func() error { return fchown(f, uid, gid) }); err != nil {
		return err
	}
	return fchmod(f, mode)
}

func fchown(f *os.File, uid, gid int) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var chownErr error
	if err := conn.Control(func(fd uintptr) { chownErr = syscall.Fchown(int(fd), uid, gid) }); err != nil {
		return err
	}
	if chownErr != nil {
		return &os.PathError{Op: "fchown", Path: f.Name(), Err: chownErr}
	}
	return nil
}

func fchmod(f *os.File, mode uint32) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var chmodErr error
	if err := conn.Control(func(fd uintptr) { chmodErr = syscall.Fchmod(int(fd), mode) }); err != nil {
		return err
	}
	if chmodErr != nil {
		return &os.PathError{Op: "fchmod", Path: f.Name(), Err: chmodErr}
	}
	return nil
}

// symlinkIn creates a link (its target untouched) in a parent already checked to be a real folder, owned
// by uid:gid (the link itself, never what it points to).
func symlinkIn(root *os.Root, rel, target string, uid, gid int, owners *ownerSetter) error {
	parent, base := path.Split(rel)
	d, err := root.OpenFile(cmp(strings.TrimSuffix(parent, "/"), "."), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	conn, err := d.SyscallConn()
	if err != nil {
		return err
	}
	var linkErr error
	if err := conn.Control(func(fd uintptr) { linkErr = symlinkat(target, int(fd), base) }); err != nil {
		return err
	}
	if linkErr != nil {
		return linkErr
	}
	return owners.set(rel, func() error {
		var chownErr error
		if err := conn.Control(func(fd uintptr) {
			chownErr = syscall.Fchownat(int(fd), base, uid, gid, atSymlinkNoFollow)
		}); err != nil {
			return err
		}
		return chownErr
	})
}

// atSymlinkNoFollow is AT_SYMLINK_NOFOLLOW (linux/fcntl.h), which the syscall package does not export.
const atSymlinkNoFollow = 0x100

// symlinkat: the syscall package has no exported symlinkat, and os.Root.Symlink needs Go 1.25.
func symlinkat(target string, dirfd int, name string) error {
	t, err := syscall.BytePtrFromString(target)
	if err != nil {
		return err
	}
	n, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, errno := syscall.Syscall(syscall.SYS_SYMLINKAT, uintptr(unsafe.Pointer(t)), uintptr(dirfd), uintptr(unsafe.Pointer(n)))
	if errno != 0 {
		return &os.LinkError{Op: "symlink", Old: target, New: name, Err: errno}
	}
	return nil
}

const sparseBlock = 64 * 1024

var zeroBlock = make([]byte, sparseBlock)

// writeSparse writes a file's content, leaving whole blocks of zeros as holes, so a sparse file comes
// back sparse.
func writeSparse(f *os.File, content io.Reader) error {
	buf := make([]byte, sparseBlock)
	var pos int64
	for {
		n, err := fill(content, buf)
		if n > 0 && !(n == sparseBlock && bytes.Equal(buf, zeroBlock)) {
			if _, werr := f.WriteAt(buf[:n], pos); werr != nil {
				return werr
			}
		}
		pos += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return f.Truncate(pos)
}

// fill reads until buf is full or the reader ends: io.EOF only at a clean end, any other error as it is
// (unlike io.ReadFull, a truncated archive's io.ErrUnexpectedEOF stays an error).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
