package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The bytes api/agent/log-frames.ts reads: big-endian u16 name length, name, u64 offset, u32 length, data.
func TestFrameWireFormat(t *testing.T) {
	body := encodeFrames([]logFrame{{stream: "stdout", offset: 258, data: []byte("hi\n")}, {stream: "file:a", offset: 1 << 40, data: nil}})
	want := "0006" + hex.EncodeToString([]byte("stdout")) + "0000000000000102" + "00000003" + hex.EncodeToString([]byte("hi\n")) +
		"0006" + hex.EncodeToString([]byte("file:a")) + "0000010000000000" + "00000000"
	if got := hex.EncodeToString(body); got != want {
		t.Fatalf("body %s\nwant %s", got, want)
	}
	frames, err := decodeFrames(body)
	if err != nil || len(frames) != 2 || frames[0].stream != "stdout" || frames[0].offset != 258 || string(frames[0].data) != "hi\n" || frames[1].offset != 1<<40 {
		t.Errorf("decoded %+v %v", frames, err)
	}
	for _, bad := range [][]byte{nil, body[:1], body[:7], body[:20], body[:len(body)-1], append(append([]byte(nil), body...), 0)} {
		if _, err := decodeFrames(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}

func TestTakeBatchMergesAndCuts(t *testing.T) {
	queue := []logFrame{
		{"stdout", 0, []byte("aa")}, {"stdout", 2, []byte("bb")}, {"stderr", 0, []byte("E")},
		{"stdout", 4, []byte("cc")}, {"stdout", 6, []byte("dddd")},
	}
	describe := func(batch []logFrame) string {
		var parts []string
		for _, f := range batch {
			parts = append(parts, fmt.Sprintf("%s@%d:%s", f.stream, f.offset, f.data))
		}
		return strings.Join(parts, " ")
	}
	if got := describe(takeBatch(queue, 100)); got != "stdout@0:aabb stderr@0:E stdout@4:ccdddd" {
		t.Errorf("whole: %s", got)
	}
	if got := describe(takeBatch(queue, 8)); got != "stdout@0:aabb stderr@0:E stdout@4:ccd" {
		t.Errorf("cut at 8 bytes: %s", got)
	}
	if string(queue[0].data) != "aa" {
		t.Error("the queue's frames were changed")
	}
}

// agentUploader stores frames as api/agent/routes.ts does (every frame of a call in order, or none: 409
// with what is held), keeps the order rows were stored in, and lets a test break a call.
type agentUploader struct {
	mu     sync.Mutex
	held   map[string]int64
	rows   []logFrame
	calls  int
	broken func(call int, frames []logFrame, u *agentUploader) (framesResult, bool)
}

func newAgentUploader() *agentUploader { return &agentUploader{held: map[string]int64{}} }

func (u *agentUploader) putFrames(_ context.Context, frames []logFrame) framesResult {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls++
	if u.broken != nil {
		if res, ok := u.broken(u.calls, frames, u); ok {
			return res
		}
	}
	return u.store(frames)
}

func (u *agentUploader) store(frames []logFrame) framesResult {
	after := map[string]int64{}
	for k, v := range u.held {
		after[k] = v
	}
	for _, f := range frames {
		if f.offset > after[f.stream] {
			return framesResult{held: u.heldCopy()}
		}
		after[f.stream] = max(after[f.stream], f.offset+int64(len(f.data)))
	}
	for _, f := range frames {
		if skip := u.held[f.stream] - f.offset; skip < int64(len(f.data)) {
			u.rows = append(u.rows, logFrame{f.stream, u.held[f.stream], append([]byte(nil), f.data[skip:]...)})
			u.held[f.stream] = f.offset + int64(len(f.data))
		}
	}
	return framesResult{stored: true}
}

func (u *agentUploader) heldCopy() map[string]int64 {
	out := map[string]int64{}
	for k, v := range u.held {
		out[k] = v
	}
	return out
}

// combined is the log as GET /v1/runs/{id}/logs shows it: the rows in the order they were stored.
func (u *agentUploader) combined(stream string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var b strings.Builder
	for _, r := range u.rows {
		if stream == "" || r.stream == stream {
			b.Write(r.data)
		}
	}
	return b.String()
}

// interleaved feeds the collector lines of three streams in turn, and gives the log in that order.
func interleaved(c *LogCollector, lines int) string {
	var want strings.Builder
	for i := 0; i < lines; i++ {
		for _, stream := range []string{"stdout", "stderr", "file:app.log"} {
			if stream == "file:app.log" && i%7 != 0 {
				continue
			}
			line := fmt.Sprintf("%s line %d pw=hunter2 %s\n", stream, i, strings.Repeat(".", i%50))
			c.Entry(stream, []byte(line))
			want.WriteString(strings.ReplaceAll(line, "hunter2", "***"))
		}
	}
	return want.String()
}

// One queue for every stream: the stored rows are in the order the pieces were read, not stream by stream.
func TestCollectorStoresTheReadingOrderAcrossStreams(t *testing.T) {
	shortFlush(t, 4096)
	up := newAgentUploader()
	c := NewLogCollector(up, []string{"hunter2"}, 0, nil)
	want := interleaved(c, 3000)
	if w := c.End(10 * time.Second); len(w) > 0 {
		t.Fatal(w)
	}
	if got := up.combined(""); got != want {
		t.Fatalf("combined log out of order: first difference at byte %d of %d", firstDifference(got, want), len(want))
	}
	if up.calls < 10 {
		t.Errorf("%d calls: the batches were not bounded", up.calls)
	}
}

// A 409 says what the agent holds of each stream: the collector resends from there, still in order, and a
// call whose answer was lost (the agent holds more than was acknowledged) is not stored twice.
func TestCollectorResendsFromWhatTheAgentHolds(t *testing.T) {
	shortFlush(t, 4096)
	up := newAgentUploader()
	up.broken = func(call int, frames []logFrame, u *agentUploader) (framesResult, bool) {
		switch call {
		case 2: // stored, but the answer is lost: the next call's frames start below what is held
			u.store(frames)
			return framesResult{held: u.heldCopy()}, true
		case 5: // only half of the first frame got stored
			f := frames[0]
			u.store([]logFrame{{f.stream, f.offset, f.data[:len(f.data)/2]}})
			return framesResult{held: u.heldCopy()}, true
		}
		return framesResult{}, false
	}
	c := NewLogCollector(up, []string{"hunter2"}, 0, nil)
	want := interleaved(c, 2000)
	if w := c.End(10 * time.Second); len(w) > 0 {
		t.Fatal(w)
	}
	if got := up.combined(""); got != want {
		t.Fatalf("combined log differs at byte %d of %d", firstDifference(got, want), len(want))
	}
}

// A refusal that names a stream gives up that stream only; the others are still stored, in order.
func TestCollectorGivesUpOnlyTheStreamRefused(t *testing.T) {
	shortFlush(t, 4096)
	up := newAgentUploader()
	up.broken = func(call int, frames []logFrame, u *agentUploader) (framesResult, bool) {
		for _, f := range frames {
			if f.stream == "file:app.log" {
				return framesResult{fatal: errors.New("HTTP 413 over the cap"), stream: f.stream}, true
			}
		}
		return framesResult{}, false
	}
	c := NewLogCollector(up, []string{"hunter2"}, 0, nil)
	want := interleaved(c, 500)
	warnings := c.End(10 * time.Second)
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], "log stream file:app.log: only 0 of ") || !strings.HasSuffix(warnings[0], " bytes could be stored (HTTP 413 over the cap)") {
		t.Errorf("warnings %q", warnings)
	}
	var wantRest strings.Builder
	for _, line := range strings.SplitAfter(want, "\n") {
		if !strings.HasPrefix(line, "file:") {
			wantRest.WriteString(line)
		}
	}
	if got := up.combined(""); got != wantRest.String() {
		t.Errorf("stdout and stderr differ at byte %d", firstDifference(got, wantRest.String()))
	}
}

// A 409 that moves nothing would be answered the same for ever: the streams are given up, not retried.
func TestCollectorGivesUpOnA409ThatMovesNothing(t *testing.T) {
	up := newAgentUploader()
	up.broken = func(int, []logFrame, *agentUploader) (framesResult, bool) {
		return framesResult{held: map[string]int64{}}, true
	}
	c := NewLogCollector(up, nil, 0, nil)
	c.Entry("stdout", []byte("x\n"))
	started := time.Now()
	warnings := c.End(10 * time.Second)
	if time.Since(started) > 3*time.Second || len(warnings) != 1 || warnings[0] != "log stream stdout: only 0 of 2 bytes could be stored (the agent refused offset 0, where it holds 0 bytes)" {
		t.Errorf("after %s: %q", time.Since(started), warnings)
	}
}

// Past the bytes the agent has not acknowledged, a source waits (the template's writes with it).
func TestCollectorHoldsTheSourceBackWhileTheAgentLags(t *testing.T) {
	old := maxUnacknowledged
	maxUnacknowledged = 1000
	t.Cleanup(func() { maxUnacknowledged = old })
	release := make(chan struct{})
	up := newAgentUploader()
	up.broken = func(int, []logFrame, *agentUploader) (framesResult, bool) {
		<-release
		return framesResult{}, false
	}
	c := NewLogCollector(up, nil, 0, nil)
	var fed atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			c.Entry("stdout", bytes.Repeat([]byte("x"), 100))
			fed.Add(1)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	if n := fed.Load(); n > 11 {
		t.Errorf("%d pieces of 100 bytes taken while 1000 may wait", n)
	}
	close(release)
	<-done
	if w := c.End(10 * time.Second); len(w) > 0 || fed.Load() != 100 {
		t.Fatal(w, fed.Load())
	}
	if got := up.combined("stdout"); len(got) != 10_000 {
		t.Errorf("%d bytes stored", len(got))
	}
}

func shortFlush(t *testing.T, bytes int) {
	old := flushBytes
	flushBytes = bytes
	t.Cleanup(func() { flushBytes = old })
}

func firstDifference(a, b string) int {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
