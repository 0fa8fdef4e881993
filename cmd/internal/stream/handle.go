package stream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

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
// starts a ring pair, which further opens share. No lock is held while it
// waits or while the opener sets the rings and paths up: attribute I/O,
// Info, close(2) of other handles, detach and rmdir go on meanwhile, and
// the opener checks afterwards that the stream is still what it started
// the rings for. Opens that find a start or the last close's stop in
// progress wait for it, O_NONBLOCK ones too (Linux's open waits on the
// stream's mutex); ctx ends any wait.
func (st *Stream) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	patient := false // the wait for flushed handles' releases is over
	for {
		ch := st.waitChan()
		st.mu.Lock()
		if st.removed {
			st.mu.Unlock()
			return nil, syscall.ENXIO
		}
		if err := st.validLocked(); err != nil {
			st.mu.Unlock()
			if errors.Is(err, syscall.EINVAL) || req.Nonblock() {
				return nil, err
			}
			if err := st.waitOpen(ctx, ch); err != nil {
				return nil, err
			}
			continue
		}
		if d := st.data; d != nil {
			if d.flushed > 0 && d.flushed == d.users && !patient {
				// Every handle's descriptor was closed (FLUSH, the FUSE
				// fallback) and nothing used it since: its RELEASE is on
				// its way (FUSE sends it after close(2) returns), and this
				// open is the next session, which starts once they are
				// gone. A handle still in use (a descriptor dup'ed before
				// the close) shows itself by its I/O; after flushIdle the
				// open joins the session anyway.
				st.mu.Unlock()
				if err := st.waitFlushed(ctx, ch, &patient); err != nil {
					return nil, err
				}
				continue
			}
			return st.admitLocked(d, req), nil
		}
		if len(st.live) > 0 {
			// A start or a stop of another ring pair is in progress.
			st.mu.Unlock()
			if err := st.waitOpen(ctx, ch); err != nil {
				return nil, err
			}
			continue
		}
		d := newRings(startParams{
			svc: st.svc, in: st.in, out: st.out,
			ringSize: st.ringSize, throttling: st.throttling, busyPoll: st.busyPoll,
			sessions: st.svc.PrtcStns&StnsSessions != 0,
		})
		owe := st.owe // no other pair runs: nothing changes it meanwhile
		st.live = append(st.live, d)
		st.users++ // attribute writes are EBUSY from here on
		st.mu.Unlock()

		err := st.start(ctx, d)
		if err == nil && owe > 0 {
			d.postOwed(owe) // before any handle can write
		}

		st.mu.Lock()
		if err != nil {
			st.users--
			st.dropLiveLocked(d)
			st.mu.Unlock()
			st.signal()
			st.idle()
			st.g.s.log.Error("cannot start stream", "stream", st.path(), "err", err)
			return nil, fmt.Errorf("start %s: %w", st.path(), syscall.EIO)
		}
		if d.stale || st.removed {
			// Detached or removed meanwhile: these rings are for an
			// attachment that is gone. Undo them and look again.
			st.mu.Unlock()
			st.stop(d, false)
			st.mu.Lock()
			st.users--
			st.mu.Unlock()
			st.signal()
			st.idle()
			continue
		}
		d.state = ringOpen
		st.data = d
		st.closed = false
		st.owe = 0 // until this pair's stop finds some still there
		if d.awaiting = st.await > 0; d.awaiting {
			time.AfterFunc(awaitMax, func() { st.giveUpAwait(d) })
		}
		d.carry, d.carryClose = st.carry, st.carryClose
		st.carry, st.carryClose = nil, false
		if d.carryClose {
			// The peer's next session ended already: this one starts
			// closed by the peer, once it has read what was carried.
			d.closeFound.Store(true)
			go st.peerClose(d)
		}
		st.users-- // admitLocked counts the handle
		h := st.admitLocked(d, req)
		st.signal()
		return h, nil
	}
}

// waitFlushed is an open's wait for flushed handles to be released: for
// the next change, or until flushIdle has passed (then patient).
func (st *Stream) waitFlushed(ctx context.Context, ch <-chan struct{}, patient *bool) error {
	t := time.NewTimer(flushIdle)
	defer t.Stop()
	st.waiting.Add(1)
	defer st.waiting.Add(-1)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
	case <-t.C:
		*patient = true
	}
	return nil
}

// waitOpen is an open's wait for the next change, counted in
// Info.Waiting.
func (st *Stream) waitOpen(ctx context.Context, ch <-chan struct{}) error {
	st.waiting.Add(1)
	defer st.waiting.Add(-1)
	return st.wait(ctx, ch, nil, false)
}

// admitLocked makes a handle on the open pair d and unlocks mu.
func (st *Stream) admitLocked(d *rings, req *cuse.OpenRequest) *handle {
	st.users++
	d.users++
	h := &handle{st: st, d: d, wake: req.Wake}
	st.mu.Unlock()
	st.sigMu.Lock()
	st.wakers[h] = struct{}{}
	st.setWakersLocked()
	st.sigMu.Unlock()
	return h
}

// handle is one open file description.
type handle struct {
	st   *Stream
	d    *rings
	wake cuse.Waker
	// flushed: the handle's descriptor was closed (FLUSH) and nothing
	// used it since (set and cleared under Stream.mu, read without it).
	flushed atomic.Bool
}

// check is the validity test every read and write starts with: ENXIO
// without a peer or on a ring pair set up for a peer that went away.
func (h *handle) check(write bool) (busy bool, err error) {
	st := h.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.validLocked(); err != nil {
		return false, err
	}
	if h.d.stale {
		return false, syscall.ENXIO
	}
	if write && (st.closed || st.removed || h.d.peerClosed) {
		return false, syscall.ENXIO
	}
	return h.d.p.busyPoll, nil
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

// Flush is the FUSE fallback's FLUSH, at close(2) of a descriptor. It
// marks the handle as on its way out (see Open), and on the ring pair's
// last handle gives the bytes still queued the chance the release's close
// would give them (see waitSent), before the release: when they cannot
// all arrive (no reader on the peer, the peer's session ended, the peer
// gone), close(2) fails with EIO, and the release that follows does not
// wait again. Linux's close(2) returns 0 then; through CUSE, which has no
// FLUSH, so does ours. A descriptor of a handle other descriptors share
// (dup, fork) waits the same way, as no close can tell it is not the
// last.
func (h *handle) Flush(ctx context.Context) error {
	st, d := h.st, h.d
	st.mu.Lock()
	if !h.flushed.Swap(true) {
		d.flushed++
	}
	last := d.users == 1 && d.state == ringOpen
	st.mu.Unlock()
	st.signal() // an open waiting for this session's end looks again
	if !last {
		return nil
	}
	if err := acquire(ctx, d.writeSem, false); err != nil {
		return err
	}
	defer func() { <-d.writeSem }()
	if err := h.undeliveredErr(); err != nil {
		return err
	}
	if d.unsent(d.tx.Stats().Completed) == 0 {
		return nil
	}
	wait, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.ended, cancel)()
	reason := waitSent(wait, d, time.Now().Add(drainMax))
	if err := ctx.Err(); err != nil {
		return err
	}
	if n := d.unsent(d.tx.Stats().Completed); n > 0 {
		d.flushGaveUp.Store(true)
		if d.ended.Err() != nil {
			reason = "the peer's session ended"
		}
		return fmt.Errorf("close %s: %d bytes will not be delivered (%s): %w", st.path(), n, reason, syscall.EIO)
	}
	return nil
}

// undeliveredErr is EIO once bytes written through the pair were
// discarded because the peer's session ended first.
func (h *handle) undeliveredErr() error {
	h.st.mu.Lock()
	n := h.d.undelivered
	h.st.mu.Unlock()
	if n == 0 {
		return nil
	}
	return fmt.Errorf("close %s: %d bytes were not delivered (the peer's session ended): %w", h.st.path(), n, syscall.EIO)
}

// Release is close(2) of one handle; the last one of its ring pair stops
// it (see stop for what that waits for, and the package doc for the
// bound). It holds no lock while it waits: other handles, opens (which
// wait for the stop to finish before starting new rings), attribute reads
// and rmdir go on.
func (h *handle) Release(ctx context.Context) {
	st, d := h.st, h.d
	st.sigMu.Lock()
	delete(st.wakers, h)
	st.setWakersLocked()
	st.sigMu.Unlock()
	st.mu.Lock()
	st.users--
	d.users--
	if h.flushed.Swap(false) {
		d.flushed--
	}
	if d.users > 0 {
		st.mu.Unlock()
		st.signal() // an open waiting for flushed handles looks again
		return
	}
	if st.data == d {
		st.data = nil
	}
	d.state = ringStopping
	peer := !d.stale && st.validLocked() == nil
	st.mu.Unlock()
	st.signal()

	res := st.stop(d, peer)

	st.mu.Lock()
	st.stats.Undelivered += res.undelivered
	st.stats.RxDiscarded += res.discarded
	st.mu.Unlock()
	switch {
	case res.undelivered > 0:
		st.g.s.log.Warn("stream closed with undelivered data", "stream", st.path(),
			"undelivered_bytes", res.undelivered, "reason", res.reason, "eof_sent", res.eofSent)
	case peer && !res.eofSent && !res.answered && res.reason != "no peer session":
		st.g.s.log.Info("stream closed without the peer seeing EOF", "stream", st.path(), "reason", res.reason)
	}
	st.signal()
	st.idle()
}
