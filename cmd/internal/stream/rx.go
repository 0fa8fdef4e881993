package stream

import (
	"context"
	"syscall"

	"tbstream/cuse"
)

// Read returns the bytes of consecutive DATA frames in place in the RX
// slots, adjacent slots merged (at most req.MaxSlices runs); the reply is
// written from them and the slots are re-posted, with one doorbell, once
// it has been delivered. A CLOSE frame is EOF when it is the first thing
// to read; after it, and after rmdir, reads return EOF.
func (h *handle) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	st, d := h.st, h.d
	busy, err := h.check(false)
	if err != nil {
		return cuse.ReadResult{}, err
	}
	if err := acquire(ctx, d.readSem, req.Nonblock()); err != nil {
		return cuse.ReadResult{}, err
	}
	release := func() { <-d.readSem }
	for {
		ch := st.waitChan()
		st.mu.Lock()
		eof := st.closed || st.removed
		st.mu.Unlock()
		if eof {
			release()
			return cuse.ReadResult{}, nil
		}
		if busy {
			d.rx.Poll()
		}
		if d.rx.RxReady() > 0 {
			break
		}
		if req.Nonblock() {
			release()
			return cuse.ReadResult{}, syscall.EAGAIN
		}
		if err := st.wait(ctx, ch, d, busy); err != nil {
			release()
			return cuse.ReadResult{}, err
		}
		if _, err := h.check(false); err != nil {
			release()
			return cuse.ReadResult{}, err
		}
	}
	return h.gather(req, release)
}

// gather builds the reply from the completed frames.
func (h *handle) gather(req *cuse.ReadRequest, release func()) (cuse.ReadResult, error) {
	st, d := h.st, h.d
	g := d.rx.RxGather(d.rxRuns[:0], d.rxOff, req.Size, req.MaxSlices, 1<<PDFClose)
	d.rxRuns = g.Runs[:0]
	if g.Bytes == 0 && g.Stopped {
		// The CLOSE frame is the oldest: EOF from now on.
		_ = d.rx.RxRelease(1)
		d.rxOff = 0
		st.mu.Lock()
		st.closed = true
		st.mu.Unlock()
		st.signal()
		release()
		return cuse.ReadResult{}, nil
	}
	return cuse.ReadResult{Data: g.Runs, Done: func(delivered bool) {
		if delivered {
			_ = d.rx.RxRelease(g.Frames)
			d.rxOff = g.Offset
			st.mu.Lock()
			st.stats.RxBytes += uint64(g.Bytes)
			st.stats.RxFrames += uint64(g.Frames)
			st.stats.RxFrameErrors += uint64(g.Flagged)
			st.mu.Unlock()
		}
		release()
	}}, nil
}
