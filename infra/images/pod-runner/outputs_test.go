package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// How outputs.json is read: never through a link, a regular file only, at most 1 MiB, with the warnings the run shows.
func TestReadOutputs(t *testing.T) {
	stateWith := func(write func(file string) error) string {
		dir := t.TempDir()
		must(t, write(filepath.Join(dir, "outputs.json")))
		return dir
	}
	writeText := func(text string) func(string) error {
		return func(f string) error { return os.WriteFile(f, []byte(text), 0o644) }
	}
	check := func(dir, wantRaw string, wantWarnings ...string) {
		t.Helper()
		raw, warnings := readOutputs(dir)
		if string(raw) != wantRaw || strings.Join(warnings, "|") != strings.Join(wantWarnings, "|") {
			t.Errorf("got %q %q, want %q %q", raw, warnings, wantRaw, wantWarnings)
		}
	}
	check(stateWith(writeText(`{"url":"https://x","n":1}`)), `{"url":"https://x","n":1}`)
	check(stateWith(func(string) error { return nil }), "")
	// Whether it is a JSON object is for the server to say (parseOutputs): the bytes go as they are.
	check(stateWith(writeText("{not json")), "{not json")
	check(stateWith(writeText("[1,2]")), "[1,2]")
	secret := filepath.Join(t.TempDir(), "host-secret.json")
	must(t, os.WriteFile(secret, []byte(`{"password":"hunter2"}`), 0o644))
	check(stateWith(func(f string) error { return os.Symlink(secret, f) }), "", "outputs.json is a symbolic link; outputs ignored")
	check(stateWith(func(f string) error { return syscall.Mkfifo(f, 0o644) }), "", "outputs.json is not a regular file; outputs ignored")
	check(stateWith(func(f string) error { return os.Mkdir(f, 0o755) }), "", "outputs.json is not a regular file; outputs ignored")
	big := `{"x":"` + strings.Repeat("a", maxOutputsBytes) + `"}`
	check(stateWith(writeText(big)), "", "outputs.json is 1048584 bytes, over the 1048576-byte limit; outputs ignored")
	if os.Getuid() != 0 {
		check(stateWith(func(f string) error { return os.WriteFile(f, []byte("{}"), 0) }), "", "outputs.json could not be read (EACCES); outputs ignored")
	}
}
