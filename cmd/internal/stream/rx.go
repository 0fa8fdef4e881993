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
// to read; after it, and after rmdir, reads return EOF. What the last
// session carried over for this one (see the package doc) comes first;
// while the session awaits the end of what the peer sent for the last
// one, reads wait.
func (h *handle) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	st, d := h.st, h.d
	h.touch()
	busy, err := h.check(false)
	if err != nil {
		return cuse.ReadResult{}, err
	}
	// A parkable READ is answered from rxNotify's goroutine once frames
	// come; a busy-poll pair has no notification, so its readers wait
	// here, reaping the ring themselves.
	nonblock := req.Nonblock() && !(busy && req.Parkable)
	if err := h.awaitWait(ctx, nonblock); err != nil {
		return cuse.ReadResult{}, err
	}
	if err := acquire(ctx, d.readSem, nonblock); err != nil {
		if !nonblock {
			return cuse.ReadResult{}, err
		}
		// The holder's release wakes the handles; a release between the
		// try and the flag is caught by the second try.
		d.readBusy.Store(true)
		if err := acquire(ctx, d.readSem, true); err != nil {
			return cuse.ReadResult{}, err
		}
	}
	release := func() {
		<-d.readSem
		if d.readBusy.Swap(false) {
			st.signalHere()
		}
	}
	for {
		ch := st.waitChan()
		st.mu.Lock()
		eof := st.closed || st.removed
		st.mu.Unlock()
		if eof {
			release()
			return cuse.ReadResult{}, nil
		}
		if len(d.carry) > 0 || d.carryClose {
			return h.fromCarry(req, release), nil
		}
		if busy {
			d.rx.Poll()
		}
		if d.rx.RxReady() > 0 {
			break
		}
		if nonblock {
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
		// rxNotify's search may not have seen it: a reader can take the
		// CLOSE between another goroutine's reap and its search.
		if d.closeFound.CompareAndSwap(false, true) {
			go st.peerClose(d)
		}
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

// fromCarry replies from what the last session carried over: its bytes,
// then, if the peer's session ended there too, EOF.
func (h *handle) fromCarry(req *cuse.ReadRequest, release func()) cuse.ReadResult {
	st, d := h.st, h.d
	if len(d.carry) == 0 {
		d.carryClose = false
		st.mu.Lock()
		st.closed = true
		st.mu.Unlock()
		st.signal()
		release()
		return cuse.ReadResult{}
	}
	var data [][]byte
	n := 0
	for _, b := range d.carry {
		if n == req.Size || req.MaxSlices > 0 && len(data) == req.MaxSlices {
			break
		}
		b = b[:min(len(b), req.Size-n)]
		data = append(data, b)
		n += len(b)
	}
	return cuse.ReadResult{Data: data, Done: func(delivered bool) {
		if delivered {
			for left := n; left > 0; {
				k := min(left, len(d.carry[0]))
				if d.carry[0] = d.carry[0][k:]; len(d.carry[0]) == 0 {
					d.carry = d.carry[1:]
				}
				left -= k
			}
			st.mu.Lock()
			st.stats.RxBytes += uint64(n)
			st.mu.Unlock()
		}
		release()
	}}
}
