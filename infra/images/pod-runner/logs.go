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

// The run's log: masked and capped per stream, sent at least every
// 250 ms or as soon as 256 KiB are waiting.
var (
	flushBytes    = 256 * 1024
	flushInterval = 250 * time.Millisecond
	// Bytes kept (all streams together) while the agent has not acknowledged them; past it a source waits.
	maxUnacknowledged int64 = 64 * 1024 * 1024
)

// logUploader stores frames, in their order, in one call; see agent.go.
type logUploader interface {
	putFrames(ctx context.Context, frames []logFrame) framesResult
}

// framesResult is how a call of putFrames ended. None of its fields set: ctx ended first.
type framesResult struct {
	stored bool // every frame is stored
	// held is, on a 409, how many bytes of each stream the agent holds (nothing of the call was stored).
	held map[string]int64
	// fatal is a refusal for good; stream is the stream the agent blamed, when it named one.
	fatal  error
	stream string
}

// logStream is one stream's masker and cap, and how far the agent holds it.
type logStream struct {
	name     string
	masker   *Masker
	maxBytes int64
	produced int64 // bytes made (masked, capped) so far: the offset of the next frame
	cut      bool
	echo     io.Writer
	acked    int64 // what the agent holds
	failure  error // the stream was refused for good: nothing more of it is sent
}

// LogCollector turns the template's output into masked, capped frames and uploads them in ONE queue, in
// the order the pieces were read, so the stored log keeps the writing order across streams (the combined
// view and the follow read it by storage order).
type LogCollector struct {
	up       logUploader
	secrets  []string
	maxBytes int64 // math.MaxInt64 when unlimited
	echo     map[string]io.Writer

	mu      sync.Mutex
	room    *sync.Cond // signalled when queued goes down or waiting is given up
	streams map[string]*logStream
	order   []string
	queue   []logFrame // not acknowledged yet, in reading order
	queued  int64      // bytes in queue
	ended   bool
	kick    chan struct{}
	done    chan struct{}
	ctx     context.Context // cancelled when waiting for the agent is given up
	cancel  context.CancelFunc
}

func NewLogCollector(up logUploader, secrets []string, maxBytes int64, echo map[string]io.Writer) *LogCollector {
	if maxBytes <= 0 {
		maxBytes = math.MaxInt64
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &LogCollector{up: up, secrets: secrets, maxBytes: maxBytes, echo: echo, streams: map[string]*logStream{},
		kick: make(chan struct{}, 1), done: make(chan struct{}), ctx: ctx, cancel: cancel}
	c.room = sync.NewCond(&c.mu)
	go c.upload()
	return c
}

func (c *LogCollector) kickNow() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// stream gives a stream's state, made on its first piece; c.mu held.
func (c *LogCollector) stream(name string) *logStream {
	if s := c.streams[name]; s != nil {
		return s
	}
	s := &logStream{name: name, masker: NewMasker(c.secrets), maxBytes: c.maxBytes, echo: c.echo[name]}
	c.streams[name] = s
	c.order = append(c.order, name)
	return s
}

// Entry is one piece of a stream as its source delivered it; data may be reused by the caller afterwards.
// Entries for one stream come from one goroutine at a time.
func (c *LogCollector) Entry(name string, data []byte) {
	c.mu.Lock()
	// Back-pressure: a source waits (and with it the template's writes) rather than bytes being dropped.
	for c.queued >= maxUnacknowledged && c.ctx.Err() == nil {
		c.kickNow() // sends now what is waiting, rather than at the next tick
		c.room.Wait()
	}
	s := c.stream(name)
	out := c.emit(s, s.masker.Push(data))
	c.mu.Unlock()
	// Only masked bytes are copied to the runner's own output (docker logs, kubectl logs). Outside the lock,
	// so a slow reader of one output holds back no other stream; one goroutine per stream keeps its order.
	if len(out) > 0 && s.echo != nil {
		_, _ = s.echo.Write(out)
	}
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

// emit queues masked bytes of a stream and gives what the stream produced (to copy to the runner's own
// output); c.mu held.
func (c *LogCollector) emit(s *logStream, masked []byte) []byte {
	data := s.capped(masked)
	if len(data) == 0 {
		return nil
	}
	start := s.produced
	s.produced += int64(len(data))
	queued := data
	if s.failure != nil {
		return data
	}
	if skip := s.acked - start; skip > 0 { // the agent already holds these (it had more than was sent)
		if skip >= int64(len(queued)) {
			return data
		}
		queued, start = queued[skip:], start+skip
	}
	// A copy: the masker may hand back the caller's own buffer.
	c.queue = append(c.queue, logFrame{stream: s.name, offset: start, data: append([]byte(nil), queued...)})
	c.queued += int64(len(queued))
	if c.queued >= int64(flushBytes) {
		c.kickNow()
	}
	return data
}

// upload sends the queue in order, up to 256 KiB a call, until the collector has ended and everything is
// acknowledged (or the wait is given up).
func (c *LogCollector) upload() {
	defer close(c.done)
	ticker := time.NewTicker(flushInterval)
	defer ticker.Stop()
	for {
		select {
		case <-c.kick:
		case <-ticker.C:
		case <-c.ctx.Done():
			return
		}
		for {
			c.mu.Lock()
			if len(c.queue) == 0 {
				ended := c.ended
				c.mu.Unlock()
				if ended {
					return
				}
				break
			}
			batch := takeBatch(c.queue, flushBytes)
			c.mu.Unlock()
			res := c.up.putFrames(c.ctx, batch)
			if !res.stored && res.held == nil && res.fatal == nil {
				return // given up while retrying
			}
			c.mu.Lock()
			c.apply(batch, res)
			c.mu.Unlock()
			if c.ctx.Err() != nil {
				return
			}
		}
	}
}

// apply takes the agent's answer to batch into account; c.mu held.
func (c *LogCollector) apply(batch []logFrame, res framesResult) {
	switch {
	case res.stored:
		for _, f := range batch {
			s := c.streams[f.stream]
			s.acked = max(s.acked, f.offset+int64(len(f.data)))
		}
		c.dropAcknowledged(true)
		return
	case res.held != nil:
		moved := false
		for _, name := range c.order {
			s := c.streams[name]
			held := res.held[name]
			switch {
			case s.failure != nil:
			case held < s.acked:
				s.failure = fmt.Errorf("the agent holds %d bytes, fewer than the %d it acknowledged", held, s.acked)
				moved = true
			case held > s.acked:
				s.acked = held
				moved = true
			}
		}
		if !moved { // resending would get the same answer for ever
			for _, f := range batch {
				c.fail(f.stream, fmt.Errorf("the agent refused offset %d, where it holds %d bytes", f.offset, res.held[f.stream]))
			}
		}
	case res.fatal != nil:
		blamed := false
		for _, f := range batch {
			blamed = blamed || f.stream == res.stream
		}
		for _, f := range batch {
			if !blamed || f.stream == res.stream {
				c.fail(f.stream, res.fatal)
			}
		}
	}
	c.dropAcknowledged(false)
}

func (c *LogCollector) fail(name string, err error) {
	if s := c.streams[name]; s.failure == nil {
		s.failure = err
	}
}

// dropAcknowledged removes from the queue what the agent holds, or will never get; c.mu held. After a
// stored batch only the front can have gone (the batch was the front), so only the front is looked at:
// a backlog of small frames is not copied for every batch.
func (c *LogCollector) dropAcknowledged(frontOnly bool) {
	var freed int64
	// done says how much of f goes: all of it for a failed stream, else what the agent holds.
	done := func(f logFrame) int64 {
		if s := c.streams[f.stream]; s.failure == nil {
			return min(int64(len(f.data)), max(0, s.acked-f.offset))
		}
		return int64(len(f.data))
	}
	if frontOnly {
		k := 0
		for ; k < len(c.queue); k++ {
			skip := done(c.queue[k])
			freed += skip
			if skip < int64(len(c.queue[k].data)) {
				f := &c.queue[k]
				f.offset, f.data = f.offset+skip, f.data[skip:]
				break
			}
		}
		clear(c.queue[:k]) // lets the data go
		c.queue = c.queue[k:]
	} else {
		kept := c.queue[:0]
		for _, f := range c.queue {
			skip := done(f)
			freed += skip
			if skip < int64(len(f.data)) {
				kept = append(kept, logFrame{stream: f.stream, offset: f.offset + skip, data: f.data[skip:]})
			}
		}
		clear(c.queue[len(kept):])
		c.queue = kept
	}
	c.queued -= freed
	if freed > 0 {
		c.room.Broadcast()
	}
}

// End releases what masking held back, flushes, and waits until every byte is acknowledged, for at most
// wait. Only once every source has stopped calling Entry. It returns one warning per stream that could
// not be stored completely.
func (c *LogCollector) End(wait time.Duration) []string {
	giveUp := func() {
		c.cancel()
		c.mu.Lock()
		c.room.Broadcast() // wakes a source waiting for room
		c.mu.Unlock()
	}
	timer := time.AfterFunc(wait, giveUp)
	defer timer.Stop()
	c.mu.Lock()
	type echoed struct {
		w    io.Writer
		data []byte
	}
	var echoes []echoed
	for _, name := range c.order {
		s := c.streams[name]
		if out := c.emit(s, s.masker.End()); len(out) > 0 && s.echo != nil {
			echoes = append(echoes, echoed{s.echo, out})
		}
	}
	c.ended = true
	c.mu.Unlock()
	for _, e := range echoes {
		_, _ = e.w.Write(e.data)
	}
	c.kickNow()
	<-c.done
	giveUp()
	c.mu.Lock()
	defer c.mu.Unlock()
	names := append([]string(nil), c.order...)
	sort.Strings(names)
	var warnings []string
	for _, name := range names {
		s := c.streams[name]
		switch {
		case s.failure != nil:
			warnings = append(warnings, fmt.Sprintf("log stream %s: only %d of %d bytes could be stored (%v)", s.name, s.acked, s.produced, s.failure))
		case s.acked < s.produced:
			warnings = append(warnings, fmt.Sprintf("log stream %s: only %d of %d bytes were stored within %s", s.name, s.acked, s.produced, wait))
		}
	}
	return warnings
}
