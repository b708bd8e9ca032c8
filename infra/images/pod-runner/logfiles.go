package main

import (
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

const (
	logFileReadBytes = 64 * 1024
	maxLogFiles      = 100
)

// validLogName is the agent API's stream name rule for files: /^[\x21-\x7e][\x20-\x7e]{0,199}$/.
func validLogName(name string) bool {
	if len(name) == 0 || len(name) > 200 || name[0] < 0x21 || name[0] > 0x7e {
		return false
	}
	for i := 1; i < len(name); i++ {
		if name[i] < 0x20 || name[i] > 0x7e {
			return false
		}
	}
	return true
}

// fileTailer follows the files a template writes in /logs (stream `file:<name>`), a port of LogFileTailer
// in log-files.ts: only regular files directly in the folder, opened without following links; a file
// that shrinks (rotated or truncated) is read again from its start. Not safe for concurrent polls.
type fileTailer struct {
	dir     string
	offsets map[string]int64
	onData  func(stream string, data []byte)
}

func newFileTailer(dir string, onData func(stream string, data []byte)) *fileTailer {
	return &fileTailer{dir: dir, offsets: map[string]int64{}, onData: onData}
}

// poll reads what is new in every file.
func (t *fileTailer) poll() {
	d, err := os.Open(t.dir)
	if err != nil {
		return
	}
	all, _ := d.Readdirnames(-1)
	d.Close()
	var names []string
	for _, n := range all {
		if validLogName(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names) // ASCII only: the same order as JavaScript's sort
	if len(names) > maxLogFiles {
		names = names[:maxLogFiles]
	}
	buf := make([]byte, logFileReadBytes)
	for _, name := range names {
		t.readNew(name, buf)
	}
}

func (t *fileTailer) readNew(name string, buf []byte) {
	full := filepath.Join(t.dir, name)
	if info, err := os.Lstat(full); err != nil || !info.Mode().IsRegular() {
		return
	}
	fd, err := syscall.Open(full, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), full)
	defer f.Close()
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		return
	}
	offset := t.offsets[name]
	if info.Size() < offset {
		offset = 0
	}
	for offset < info.Size() {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), info.Size()-offset)], offset)
		if n > 0 {
			t.onData("file:"+name, buf[:n])
			offset += int64(n)
		}
		if n == 0 || (err != nil && err != io.EOF) {
			break
		}
	}
	t.offsets[name] = offset
}
