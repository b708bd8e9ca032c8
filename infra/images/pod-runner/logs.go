package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Like LogCollector in activities/execution/logs.ts: masked, capped, in order within each stream, sent
// at least every 250 ms or as soon as 256 KiB are waiting.
var (
	flushBytes    = 256 * 1024
	flushInterval = 250 * time.Millisecond
	// Bytes kept (all streams together) while the agent has not acknowledged them; past it a source waits.
	maxUnacknowledged int64 = 64 * 1024 * 1024
)

// logUploader stores a piece of a stream at an offset; see agent.go.
type logUploader interface {
	putLog(ctx context.Context, stream string, offset int64, data []byte) uploadResult
}

type uploadResult struct {
	// stored is how many bytes of the stream the agent holds after the call (offset+len on success,
	// storedBytes on a 409); -1 with fatal set when the stream cannot be stored at all.
	stored int64
	fatal  error
}

// logStream is one stream's masker, cap and upload queue. Entries for one stream come from one goroutine.
type logStream struct {
	name     string
	masker   *Masker
	maxBytes int64
	produced int64
	cut      bool
	echo     io.Writer

	mu      sync.Mutex
	buf     []byte // the bytes at [acked, acked+len(buf))
	acked   int64  // what the agent holds
	ended   bool
	failure error
	kick    chan struct{}
	done    chan struct{}
}

// LogCollector turns the template's output into uploaded, masked log streams.
type LogCollector struct {
	up       logUploader
	secrets  []string
	maxBytes int64 // math.MaxInt64 when unlimited
	echo     map[string]io.Writer

	mu      sync.Mutex
	streams map[string]*logStream
	order   []string
	ctx     context.Context // cancelled when waiting for the agent is given up
	cancel  context.CancelFunc

	budgetMu sync.Mutex
	room     *sync.Cond // signalled when unacked goes down or waiting is given up
	unacked  int64
}

func NewLogCollector(up logUploader, secrets []string, maxBytes int64, echo map[string]io.Writer) *LogCollector {
	if maxBytes <= 0 {
		maxBytes = math.MaxInt64
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &LogCollector{up: up, secrets: secrets, maxBytes: maxBytes, echo: echo, streams: map[string]*logStream{}, ctx: ctx, cancel: cancel}
	c.room = sync.NewCond(&c.budgetMu)
	return c
}

// release gives back room for n bytes the agent acknowledged (or that will never be sent).
func (c *LogCollector) release(n int64) {
	if n <= 0 {
		return
	}
	c.budgetMu.Lock()
	c.unacked -= n
	c.room.Broadcast()
	c.budgetMu.Unlock()
}

func (c *LogCollector) stream(name string) *logStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[name]; s != nil {
		return s
	}
	s := &logStream{name: name, masker: NewMasker(c.secrets), maxBytes: c.maxBytes, echo: c.echo[name],
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	c.streams[name] = s
	c.order = append(c.order, name)
	go c.upload(s)
	return s
}

func (c *LogCollector) kickAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.streams {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Entry is one piece of a stream as its source delivered it; data may be reused by the caller afterwards.
func (c *LogCollector) Entry(name string, data []byte) {
	s := c.stream(name)
	c.emit(s, s.masker.Push(data))
}

// capped applies the cap exactly like LogCollector.capped in logs.ts, so both adapters store the same bytes.
func (s *logStream) capped(masked []byte) []byte {
	if s.cut {
		return nil
	}
	room := s.maxBytes - s.produced
	if int64(len(masked)) <= room {
		return masked
	}
	s.cut = true
	marker := fmt.Sprintf("\n[glider-gun: %s cut here: over %s bytes; the rest was not kept]\n", s.name, strconv.FormatInt(s.maxBytes, 10))
	out := append([]byte(nil), masked[:max(0, room)]...)
	return append(out, marker...)
}

func (c *LogCollector) emit(s *logStream, masked []byte) {
	data := s.capped(masked)
	if len(data) == 0 {
		return
	}
	if s.echo != nil {
		_, _ = s.echo.Write(data)
	}
	start := s.produced
	s.produced += int64(len(data))
	// Back-pressure: a source waits (and with it the template's writes) rather than bytes being dropped.
	c.budgetMu.Lock()
	for c.unacked >= maxUnacknowledged && c.ctx.Err() == nil {
		c.budgetMu.Unlock()
		c.kickAll() // sends now what is waiting, rather than at the next tick
		c.budgetMu.Lock()
		if c.unacked < maxUnacknowledged {
			break
		}
		c.room.Wait()
	}
	c.unacked += int64(len(data))
	c.budgetMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failure != nil {
		c.release(int64(len(data)))
		return
	}
	if skip := s.acked - start; skip > 0 { // the agent already holds these (a resent stream)
		c.release(min(skip, int64(len(data))))
		if skip >= int64(len(data)) {
			return
		}
		data = data[skip:]
	}
	s.buf = append(s.buf, data...)
	if len(s.buf) >= flushBytes {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// upload sends a stream's bytes in order, each piece at its offset, until the stream has ended and
// everything is acknowledged (or the wait is given up).
func (c *LogCollector) upload(s *logStream) {
	defer close(s.done)
	ticker := time.NewTicker(flushInterval)
	defer ticker.Stop()
	for {
		select {
		case <-s.kick:
		case <-ticker.C:
		case <-c.ctx.Done():
			return
		}
		for {
			s.mu.Lock()
			if s.failure != nil || len(s.buf) == 0 {
				ended := s.ended
				s.mu.Unlock()
				if ended {
					return
				}
				break
			}
			offset, chunk := s.acked, s.buf[:min(len(s.buf), flushBytes)]
			s.mu.Unlock()
			res := c.up.putLog(c.ctx, s.name, offset, chunk)
			s.mu.Lock()
			var freed int64
			switch {
			case res.fatal != nil:
				s.failure = res.fatal
				freed, s.buf = int64(len(s.buf)), nil
			case res.stored < s.acked:
				s.failure = fmt.Errorf("the agent holds %d bytes, fewer than the %d it acknowledged", res.stored, s.acked)
				freed, s.buf = int64(len(s.buf)), nil
			default:
				freed = min(res.stored-s.acked, int64(len(s.buf)))
				s.buf = s.buf[freed:]
				s.acked = res.stored
			}
			s.mu.Unlock()
			c.release(freed)
			if c.ctx.Err() != nil {
				return
			}
		}
	}
}

// End releases what masking held back, flushes, and waits until every byte is acknowledged, for at most
// wait. Only once every source has stopped calling Entry. It returns one warning per stream that could
// not be stored completely.
func (c *LogCollector) End(wait time.Duration) []string {
	c.mu.Lock()
	streams := make([]*logStream, 0, len(c.order))
	for _, name := range c.order {
		streams = append(streams, c.streams[name])
	}
	c.mu.Unlock()
	giveUp := func() {
		c.cancel()
		c.budgetMu.Lock()
		c.room.Broadcast() // wakes a source waiting for room
		c.budgetMu.Unlock()
	}
	timer := time.AfterFunc(wait, giveUp)
	defer timer.Stop()
	for _, s := range streams {
		c.emit(s, s.masker.End())
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	for _, s := range streams {
		<-s.done
	}
	giveUp()
	var warnings []string
	sort.SliceStable(streams, func(a, b int) bool { return streams[a].name < streams[b].name })
	for _, s := range streams {
		s.mu.Lock()
		switch {
		case s.failure != nil:
			warnings = append(warnings, fmt.Sprintf("log stream %s: only %d of %d bytes could be stored (%v)", s.name, s.acked, s.produced, s.failure))
		case len(s.buf) > 0:
			warnings = append(warnings, fmt.Sprintf("log stream %s: only %d of %d bytes were stored within %s", s.name, s.acked, s.produced, wait))
		}
		s.mu.Unlock()
	}
	return warnings
}
