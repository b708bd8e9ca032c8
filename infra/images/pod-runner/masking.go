package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// mask replaces a sensitive value in the log.
var mask = []byte("***")

// minMaskedLength: shorter values would mask ordinary text.
const minMaskedLength = 3

// Masker replaces secret values in a byte stream that arrives in arbitrary pieces: a port of Masker in
// activities/execution/masking.ts. Only the end of a piece that could still grow into a value is held
// back, so a value split across two pieces is still found while a line with no such tail goes out at
// once; End releases the rest. The output is the same however the input was cut.
type Masker struct {
	needles [][]byte
	longest int
	pending []byte
}

func NewMasker(values []string) *Masker {
	seen := map[string]bool{}
	m := &Masker{}
	for _, v := range values {
		if len(v) < minMaskedLength || seen[v] {
			continue
		}
		seen[v] = true
		m.needles = append(m.needles, []byte(v))
	}
	// Longest first, so a value containing another is masked whole (a stable sort, like Array.sort).
	sort.SliceStable(m.needles, func(a, b int) bool { return len(m.needles[a]) > len(m.needles[b]) })
	if len(m.needles) > 0 {
		m.longest = len(m.needles[0])
	}
	return m
}

// Push masks one piece; the result may hold back the end of the input until the next piece.
func (m *Masker) Push(piece []byte) []byte {
	if len(m.needles) == 0 {
		return piece
	}
	buf := append(m.pending, piece...)
	out, consumed := m.scan(buf, false)
	m.pending = append([]byte(nil), buf[consumed:]...)
	return out
}

// End releases what was held back.
func (m *Masker) End() []byte {
	out, _ := m.scan(m.pending, true)
	m.pending = nil
	return out
}

// undecided is the first position from `from` where a value may start but the buffer ends before it
// could be told: what follows decides it, so nothing from there on may be emitted yet.
func (m *Masker) undecided(buf []byte, from int) int {
	for p := max(from, len(buf)-m.longest+1); p < len(buf); p++ {
		for _, n := range m.needles {
			if len(n) > len(buf)-p && bytes.HasPrefix(n, buf[p:]) {
				return p
			}
		}
	}
	return len(buf)
}

// scan masks every match that is decided, and emits everything before the first undecided position.
func (m *Masker) scan(buf []byte, final bool) ([]byte, int) {
	var out []byte
	from := 0
	for {
		safe := len(buf)
		if !final {
			safe = m.undecided(buf, from)
		}
		// The earliest match from here; on a tie the longest needle wins (they are sorted longest first).
		at := -1
		var hit []byte
		for _, n := range m.needles {
			if p := bytes.Index(buf[from:], n); p != -1 && (at == -1 || from+p < at) {
				at = from + p
				hit = n
			}
		}
		if hit == nil || at >= safe {
			return append(out, buf[from:safe]...), safe
		}
		out = append(out, buf[from:at]...)
		out = append(out, mask...)
		from = at + len(hit)
	}
}

// secretStrings gives the strings to mask for a run's sensitive values:
// strings as they are, anything else as its compact JSON text. The file is written by JSON.stringify,
// so compacting its text gives exactly what JSON.stringify(value) gives.
func secretStrings(data []byte) ([]string, error) {
	var object map[string]json.RawMessage
	if err := json.Unmarshal(data, &object); err != nil {
		return nil, err
	}
	if object == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	values := make([]string, 0, len(object))
	for _, raw := range object {
		if len(raw) > 0 && raw[0] == '"' {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, err
			}
			values = append(values, s)
			continue
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return nil, err
		}
		values = append(values, compact.String())
	}
	return values, nil
}
