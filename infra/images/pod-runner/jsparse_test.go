package main

import (
	"encoding/json"
	"os"
	"testing"
)

// testdata/json-parse-errors.json holds what JSON.parse said about each input
// (npx tsx testdata/gen-json-parse-errors.ts).
func TestJSONParseErrorsMatchV8(t *testing.T) {
	data, err := os.ReadFile("testdata/json-parse-errors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct{ Input, Error string }
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatal(err)
	}
	failures := 0
	for _, v := range vectors {
		if got := jsonParseError(decodeUTF8([]byte(v.Input))); got != v.Error {
			failures++
			if failures <= 20 {
				t.Errorf("JSON.parse(%q):\n  got  %q\n  want %q", v.Input, got, v.Error)
			}
		}
	}
	if failures > 0 {
		t.Errorf("%d of %d vectors differ", failures, len(vectors))
	}
}

func TestDecodeUTF8LikeBuffer(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []uint16
	}{
		{"a\xe2\x82b", []uint16{'a', 0xFFFD, 'b'}},         // one U+FFFD for a cut sequence
		{"\xff\xfe", []uint16{0xFFFD, 0xFFFD}},             // bytes that never start one
		{"\xed\xa0\x80", []uint16{0xFFFD, 0xFFFD, 0xFFFD}}, // an encoded surrogate
		{"é😀", []uint16{0xe9, 0xd83d, 0xde00}},
		{"\xf0\x9f\x98", []uint16{0xFFFD}},
	} {
		got := decodeUTF8([]byte(c.in))
		if string(rune(len(got))) != string(rune(len(c.want))) || !equalUnits(got, c.want) {
			t.Errorf("decodeUTF8(%q) = %x, want %x", c.in, got, c.want)
		}
	}
}

func equalUnits(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
