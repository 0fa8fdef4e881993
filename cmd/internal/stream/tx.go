package stream

import (
	"context"
	"errors"
	"syscall"

	"tbstream/cuse"
	"tbstream/nhi"
)

// Write queues the payload as frames of up to 4096 bytes (SOF FRAME_START,
// EOF DATA) in one batch: it waits for a first free descriptor (EAGAIN
// with O_NONBLOCK) and posts as many frames as the TX ring has free
// descriptors, with one doorbell. A payload the CUSE server read into
// buffers the stream lent (see lend.go) is posted from those buffers; any
// other payload is copied once into the ring's own buffers. What does not
// fit is a short write, as Linux 7.3. Once the peer's session has ended,
// writes (and a write waiting for a slot) fail with ENXIO; while the
// session awaits the end of what the peer sent for the last one, they
// wait (see the package doc).
func (h *handle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	st, d := h.st, h.d
	h.touch()
	busy, err := h.check(true)
	if err != nil {
		return 0, err
	}
	if err := h.awaitWait(ctx, req.Nonblock()); err != nil {
		return 0, err
	}
	if err := acquire(ctx, d.writeSem, req.Nonblock()); err != nil {
		if !req.Nonblock() {
			return 0, err
		}
		// The holder's release wakes the pollers; a release between the
		// try and the flag is caught by the second try.
		st.outWanted.Store(true)
		if err := acquire(ctx, d.writeSem, true); err != nil {
			return 0, err
		}
	}
	defer func() {
		<-d.writeSem
		if st.outWanted.Swap(false) {
			st.signal()
		}
	}()
	for {
		ch := st.waitChan()
		if _, err := h.check(true); err != nil {
			return 0, err
		}
		if d.tx.TxFree() > 0 {
			break
		}
		if req.Nonblock() {
			// A poller waits for room now (Go's netpoller does after
			// EAGAIN without polling again): the next completion wakes.
			st.outWanted.Store(true)
			if d.tx.TxFree() > 0 {
				continue
			}
			return 0, syscall.EAGAIN
		}
		if err := st.wait(ctx, ch, d, busy); err != nil {
			return 0, err
		}
	}
	size := req.Len()
	if size == 0 {
		return 0, nil
	}
	lent := st.lendingOf(req.Data)
	var n int
	if lent != nil {
		n, err = d.tx.TxCommit(&lent.b, size, PDFFrameStart, PDFData)
	} else {
		n, err = copyCommit(d, req.Data, size)
	}
	if err != nil {
		if errors.Is(err, nhi.ErrRingFull) {
			st.outWanted.Store(true)
			return 0, syscall.EAGAIN // TxFree said otherwise a moment ago
		}
		return 0, syscall.ENXIO
	}
	frames := (n + nhi.SlotSize - 1) / nhi.SlotSize
	d.logTx(frames, n)
	st.mu.Lock()
	st.stats.TxBytes += uint64(n)
	st.stats.TxFrames += uint64(frames)
	if lent != nil {
		st.stats.TxLentBytes += uint64(n)
	}
	st.mu.Unlock()
	return n, nil
}

// copyCommit is the copy path: it reserves the ring's own buffers for up
// to size bytes (as many as there are free descriptors), copies src into
// them and posts them.
func copyCommit(d *rings, src [][]byte, size int) (int, error) {
	b := &d.txBufs
	defer b.Release() // a short fill leaves buffers unused
	if err := d.tx.TxReserve(b, (size+nhi.SlotSize-1)/nhi.SlotSize); err != nil {
		return 0, err
	}
	return d.tx.TxCommit(b, fill(b.Runs(), src), PDFFrameStart, PDFData)
}

// fill copies src into the runs front to back and returns how many bytes
// it copied: all of src, or as much as the runs hold.
func fill(runs, src [][]byte) int {
	n, i, off := 0, 0, 0 // src[i][off:] is next
	for _, run := range runs {
		for len(run) > 0 && i < len(src) {
			k := copy(run, src[i][off:])
			run, off, n = run[k:], off+k, n+k
			if off == len(src[i]) {
				i, off = i+1, 0
			}
		}
	}
	return n
}
