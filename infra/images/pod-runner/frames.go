package main

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// logFramesType is the content type of POST log-frames (api/agent/log-frames.ts reads it).
const logFramesType = "application/vnd.glider-gun.log-frames"

// maxFrameOffset keeps offsets exact in a JavaScript number (Number.MAX_SAFE_INTEGER), as the agent reads them.
const maxFrameOffset = 1<<53 - 1

// logFrame is a piece of one stream at its byte offset. Frames are sent, and stored, in the order the
// pieces were read from every stream together, so the log's stored order is its writing order.
type logFrame struct {
	stream string
	offset int64
	data   []byte
}

// frameHeaderBytes is a frame's size without its name and data: u16 name length, u64 offset, u32 data length.
const frameHeaderBytes = 2 + 8 + 4

// encodeFrames writes frames as the body of POST log-frames: for each, in order and big-endian,
// [u16 name length][name][u64 offset][u32 data length][data].
func encodeFrames(frames []logFrame) []byte {
	size := 0
	for _, f := range frames {
		size += frameHeaderBytes + len(f.stream) + len(f.data)
	}
	out := make([]byte, 0, size)
	for _, f := range frames {
		out = binary.BigEndian.AppendUint16(out, uint16(len(f.stream)))
		out = append(out, f.stream...)
		out = binary.BigEndian.AppendUint64(out, uint64(f.offset))
		out = binary.BigEndian.AppendUint32(out, uint32(len(f.data)))
		out = append(out, f.data...)
	}
	return out
}

// decodeFrames reads a body made by encodeFrames; the tests' agents use it. The data of the frames
// it returns is part of body.
func decodeFrames(body []byte) ([]logFrame, error) {
	var frames []logFrame
	for at := 0; at < len(body); {
		if len(body)-at < 2 {
			return nil, fmt.Errorf("frame %d: cut in its name length", len(frames))
		}
		nameLen := int(binary.BigEndian.Uint16(body[at:]))
		at += 2
		if nameLen == 0 || len(body)-at < nameLen+12 {
			return nil, fmt.Errorf("frame %d: empty or cut name, offset or length", len(frames))
		}
		name := string(body[at : at+nameLen])
		at += nameLen
		offset := binary.BigEndian.Uint64(body[at:])
		length := int64(binary.BigEndian.Uint32(body[at+8:]))
		at += 12
		if offset > maxFrameOffset {
			return nil, fmt.Errorf("frame %d: offset %d too large", len(frames), offset)
		}
		if int64(len(body)-at) < length {
			return nil, fmt.Errorf("frame %d: %d bytes announced, %d left", len(frames), length, len(body)-at)
		}
		frames = append(frames, logFrame{stream: name, offset: int64(offset), data: body[at : at+int(length)]})
		at += int(length)
	}
	if len(frames) == 0 {
		return nil, errors.New("no frames")
	}
	return frames, nil
}

// takeBatch gives the frames to send next: the front of queue, at most limit bytes of data (a longer
// frame is cut), with consecutive frames of one stream merged (they are contiguous: a stream's frames are
// queued in offset order, and nothing of that stream can come between two consecutive ones).
func takeBatch(queue []logFrame, limit int) []logFrame {
	var batch []logFrame
	room := limit
	for _, f := range queue {
		if room <= 0 {
			break
		}
		data := f.data[:min(len(f.data), room)]
		room -= len(data)
		if n := len(batch); n > 0 && batch[n-1].stream == f.stream && batch[n-1].offset+int64(len(batch[n-1].data)) == f.offset {
			batch[n-1].data = append(batch[n-1].data, data...)
			continue
		}
		batch = append(batch, logFrame{stream: f.stream, offset: f.offset, data: append([]byte(nil), data...)})
	}
	return batch
}
