package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// mask replaces a sensitive value in the log (activities/execution/masking.ts: MASK).
var mask = []byte("***")

// minMaskedLength: shorter values would mask ordinary text (masking.ts: MIN_MASKED_LENGTH).
const minMaskedLength = 3

// Masker replaces secret values in a byte stream that arrives in arbitrary pieces: a port of Masker in
// activities/execution/masking.ts. Up to (longest value - 1) bytes are held back, so a value split
// across two pieces is still found; End releases the rest. The output is the same however the input
// was cut.
type Masker struct {
	needles  [][]byte
	holdBack int
	pending  []byte
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
	for _, n := range m.needles {
		m.holdBack = max(m.holdBack, len(n)-1)
	}
	return m
}

// Push masks one piece; the result may hold back the end of the input until the next piece.
func (m *Masker) Push(piece []byte) []byte {
	if len(m.needles) == 0 {
		return piece
	}
	buf := append(m.pending, piece...)
	out, consumed := m.scan(buf, max(0, len(buf)-m.holdBack))
	m.pending = append([]byte(nil), buf[consumed:]...)
	return out
}

// End releases what was held back.
func (m *Masker) End() []byte {
	out, _ := m.scan(m.pending, len(m.pending))
	m.pending = nil
	return out
}

// scan masks matches that start before safe, and emits everything up to safe or the end of the last match.
func (m *Masker) scan(buf []byte, safe int) ([]byte, int) {
	var out []byte
	from := 0
	for {
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
			break
		}
		out = append(out, buf[from:at]...)
		out = append(out, mask...)
		from = at + len(hit)
	}
	consumed := max(from, safe)
	out = append(out, buf[from:consumed]...)
	return out, consumed
}

// secretStrings gives the strings to mask for a run's sensitive values, like secretStrings in masking.ts:
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
