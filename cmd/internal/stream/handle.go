package stream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"syscall"

	"tbstream/cuse"
)

// waitChan returns the channel closed at the next change of state. Take it
// before checking a condition, then wait on it: no wake-up is lost.
func (st *Stream) waitChan() <-chan struct{} {
	st.sigMu.Lock()
	defer st.sigMu.Unlock()
	return st.changed
}

// wait blocks until the next change or ctx ends. Busy-poll streams have no
// interrupts: they reap the rings themselves and spin.
func (st *Stream) wait(ctx context.Context, ch <-chan struct{}, d *rings, busy bool) error {
	if busy && d != nil {
		d.tx.Poll()
		d.rx.Poll()
		runtime.Gosched()
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
		return nil
	}
}

// Open is open(2) of /dev/tbstreamX: it waits for the peer (ENXIO at once
// with O_NONBLOCK), fails with EINVAL without HopIDs, and the first opener
// starts the rings. Further opens share them.
func (st *Stream) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	st.life.Lock()
	defer st.life.Unlock()
	for {
		ch := st.waitChan()
		st.mu.Lock()
		if st.removed {
			st.mu.Unlock()
			return nil, syscall.ENXIO
		}
		err := st.validLocked()
		if err == nil {
			break
		}
		st.mu.Unlock()
		if errors.Is(err, syscall.EINVAL) || req.Nonblock() {
			return nil, err
		}
		if err := st.wait(ctx, ch, nil, false); err != nil {
			return nil, err
		}
	}
	defer st.mu.Unlock()
	if st.users == 0 {
		d, err := st.startLocked()
		if err != nil {
			st.g.s.log.Error("cannot start stream", "stream", st.g.name+"/"+st.name, "err", err)
			return nil, fmt.Errorf("start %s: %w", st.name, syscall.EIO)
		}
		st.data = d
		st.closed = false
	}
	st.users++
	h := &handle{st: st, d: st.data, wake: req.Wake}
	st.sigMu.Lock()
	st.wakers[h] = struct{}{}
	st.sigMu.Unlock()
	return h, nil
}

// handle is one open file description.
type handle struct {
	st   *Stream
	d    *rings
	wake cuse.Waker
}

// check is the validity test every read and write starts with.
func (h *handle) check(write bool) (busy bool, err error) {
	st := h.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.validLocked(); err != nil {
		return false, err
	}
	if write && (st.closed || st.removed) {
		return false, syscall.ENXIO
	}
	return st.busyPoll, nil
}

func acquire(ctx context.Context, sem chan struct{}, nonblock bool) error {
	select {
	case sem <- struct{}{}:
		return nil
	default:
	}
	if nonblock {
		return syscall.EAGAIN
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Release is close(2) of one handle; the last one stops the stream.
func (h *handle) Release(ctx context.Context) {
	st := h.st
	st.life.Lock()
	defer st.life.Unlock()
	st.sigMu.Lock()
	delete(st.wakers, h)
	st.sigMu.Unlock()
	st.mu.Lock()
	st.users--
	if st.users > 0 {
		st.mu.Unlock()
		return
	}
	d := st.data
	st.data = nil
	st.stopping = true
	attached := st.svc != nil && !st.svc.XDomain().Unplugged()
	busy := st.busyPoll
	st.mu.Unlock()
	st.stop(d, attached, busy)
	// An rmdir before or during the stop left the HopIDs and the index to
	// us (see Remove).
	st.mu.Lock()
	st.stopping = false
	removed := st.removed
	if removed {
		st.releaseHopIDsLocked()
	}
	st.mu.Unlock()
	st.signal()
	if removed {
		// Close from a goroutine: this Release runs inside the device's
		// own server, which Close waits for.
		go st.node.Close()
		st.g.s.freeIndex(st.index)
		st.g.retakeHopIDs()
	}
}
