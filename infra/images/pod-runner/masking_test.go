package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func maskAll(values []string, pieces ...string) string {
	m := NewMasker(values)
	var out []byte
	for _, p := range pieces {
		out = append(out, m.Push([]byte(p))...)
	}
	return string(append(out, m.End()...))
}

// The cases of test/unit/masking.test.ts.
func TestMasker(t *testing.T) {
	if got := maskAll([]string{"hunter2", "tok-123"}, "pw=hunter2 token=tok-123 again hunter2\n"); got != "pw=*** token=*** again ***\n" {
		t.Errorf("every occurrence: %q", got)
	}
	text := "before hunter2 middle hunter2hunter2 after"
	want := "before *** middle ****** after"
	for cut := 0; cut <= len(text); cut++ {
		if got := maskAll([]string{"hunter2"}, text[:cut], text[cut:]); got != want {
			t.Errorf("cut at %d: %q", cut, got)
		}
	}
	if got := maskAll([]string{"hunter2"}, strings.Split(text, "")...); got != want {
		t.Errorf("one byte at a time: %q", got)
	}
	if got := maskAll([]string{"abc", "abcdef"}, "xxabcdefxx abc"); got != "xx***xx ***" {
		t.Errorf("longest first: %q", got)
	}
	if got := maskAll(nil, "plain text"); got != "plain text" {
		t.Errorf("no values: %q", got)
	}
	if got := maskAll([]string{"a", ""}, "a banana"); got != "a banana" {
		t.Errorf("short values: %q", got)
	}
	pem := "-----BEGIN KEY-----\nMIIB\n-----END KEY-----"
	if got := maskAll([]string{pem, "pässwört"}, "key:\n"+pem[:10], pem[10:]+"\nand pässwört"); got != "key:\n***\nand ***" {
		t.Errorf("multi-line and non-ASCII: %q", got)
	}
}

func TestMaskerSameResultHoweverCut(t *testing.T) {
	values := []string{"aXa", "XaX", "aXaXa", "pässwört"}
	text := []byte("aXaXaXa XaXaX pässwörtaXa aaXaa pässwör pässwört")
	whole := maskAll(values, string(text))
	for size := 1; size <= 7; size++ {
		for start := 0; start < size; start++ {
			pieces := []string{string(text[:start])}
			for at := start; at < len(text); at += size {
				pieces = append(pieces, string(text[at:min(at+size, len(text))]))
			}
			if got := maskAll(values, pieces...); got != whole {
				t.Fatalf("pieces of %d from %d: %q, whole: %q", size, start, got, whole)
			}
		}
	}
}

// Like "releases a piece at once unless its end could still grow into a value" in masking.test.ts.
func TestMaskerHoldsBackOnlyAPossibleValue(t *testing.T) {
	m := NewMasker([]string{"pw-0123456789ab", "other-secret"})
	steps := []struct{ in, want string }{
		{"first line\n", "first line\n"},
		{"see pw-01", "see "},
		{"23456789ab and oth", "*** and "},
		{"erwise\n", "otherwise\n"},
		{"pw-", ""},
	}
	for _, s := range steps {
		if got := string(m.Push([]byte(s.in))); got != s.want {
			t.Fatalf("push %q: %q, want %q", s.in, got, s.want)
		}
	}
	if got := string(m.End()); got != "pw-" {
		t.Fatalf("end: %q", got)
	}
}

func TestSecretStrings(t *testing.T) {
	// As written by the adapter: JSON.stringify(secrets, null, 2).
	got, err := secretStrings([]byte("{\n  \"a\": \"x\",\n  \"n\": 12345,\n  \"o\": {\n    \"k\": \"v\",\n    \"l\": [\n      1,\n      true\n    ]\n  }\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"x": true, "12345": true, `{"k":"v","l":[1,true]}`: true}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for _, v := range got {
		if !want[v] {
			t.Errorf("unexpected %q in %q", v, got)
		}
	}
	if _, err := secretStrings([]byte("[1]")); err == nil {
		t.Error("an array was accepted")
	}
	if _, err := secretStrings([]byte("null")); err == nil {
		t.Error("null was accepted")
	}
}

// memoryUploader stores frames as the agent does, and keeps every call's frames.
type memoryUploader struct {
	mu     sync.Mutex
	stored map[string][]byte
	calls  [][]logFrame
}

func (m *memoryUploader) putFrames(_ context.Context, frames []logFrame) framesResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, frames)
	for _, f := range frames {
		m.stored[f.stream] = append(m.stored[f.stream][:f.offset], f.data...)
	}
	return framesResult{stored: true}
}

// testdata/log-vectors.json: what the Docker adapter's LogCollector stores for the same pieces, values
// and cap (made by the TypeScript collector of earlier versions, kept as fixed vectors: the behaviour must not drift).
func TestLogCollectorMatchesTypeScript(t *testing.T) {
	data, err := os.ReadFile("testdata/log-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct {
		Secrets  json.RawMessage
		MaxBytes int64
		Pieces   []string
		Stored   string
	}
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatal(err)
	}
	for i, v := range vectors {
		values, err := secretStrings(v.Secrets)
		if err != nil {
			t.Fatal(err)
		}
		maxBytes := v.MaxBytes
		if maxBytes < 0 {
			maxBytes = 0 // no cap
		}
		up := &memoryUploader{stored: map[string][]byte{}}
		var echo bytes.Buffer
		c := NewLogCollector(up, values, maxBytes, map[string]io.Writer{"stdout": &echo})
		for _, p := range v.Pieces {
			piece, _ := base64.StdEncoding.DecodeString(p)
			c.Entry("stdout", piece)
		}
		if warnings := c.End(time.Second); len(warnings) > 0 {
			t.Fatal(warnings)
		}
		want, _ := base64.StdEncoding.DecodeString(v.Stored)
		if got := up.stored["stdout"]; !bytes.Equal(got, want) {
			t.Errorf("vector %d (cap %d, values %s):\n  got  %q\n  want %q", i, v.MaxBytes, v.Secrets, got, want)
		}
		if !bytes.Equal(echo.Bytes(), want) {
			t.Errorf("vector %d: the copy on the runner's own output differs: %q", i, echo.Bytes())
		}
	}
}

func TestCapMarker(t *testing.T) {
	up := &memoryUploader{stored: map[string][]byte{}}
	c := NewLogCollector(up, nil, 2048, nil)
	for i := 0; i < 10; i++ {
		c.Entry("stdout", bytes.Repeat([]byte("x"), 1000))
	}
	c.Entry("file:app.log", []byte("short"))
	c.End(time.Second)
	got := string(up.stored["stdout"])
	if got != strings.Repeat("x", 2048)+"\n[glider-gun: stdout cut here: over 2048 bytes; the rest was not kept]\n" {
		t.Errorf("stdout: %q", got[2000:])
	}
	if string(up.stored["file:app.log"]) != "short" {
		t.Errorf("file stream: %q", up.stored["file:app.log"])
	}
}
