package stream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"

	"tbstream/cuse"
	"tbstream/nhi"
	"tbstream/xdomain"
	"tbstream/xdomain/ctl"
)

// PDFs of USB4STREAM frames (§1.8): every frame starts with FRAME_START;
// data frames end with DATA, the last close sends one CLOSE frame.
const (
	PDFFrameStart = 1
	PDFData       = 2
	PDFClose      = 3
	// CloseFrameSize is the CLOSE frame: 256 bytes of zeros.
	CloseFrameSize = 256
)

const (
	// flushIdle is how long close waits for the TX ring to make progress
	// (Linux waits 500 ms in all).
	flushIdle = 500 * time.Millisecond
	// pathTimeout bounds enabling or disabling DMA paths.
	pathTimeout = 5 * time.Second
)

// rings is the TX/RX ring pair of an open stream and the DMA paths between
// them and the lane adapter.
type rings struct {
	tx, rx *nhi.Ring
	paths  xdomain.DMAPaths
	route  ctl.Route

	readSem  chan struct{} // one READ at a time owns the RX frames
	writeSem chan struct{} // one WRITE at a time fills TX slots
	rxOff    int           // bytes of the oldest RX frame already read
}

// startLocked is tbstream_dev_start in the order thunderbolt-net uses and
// the design asks for: allocate both rings, start them with RX primed,
// then enable the paths, so that no frame arrives before a buffer waits.
func (st *Stream) startLocked() (*rings, error) {
	s := st.g.s
	flags := nhi.RingFrame | nhi.RingE2E
	if st.busyPoll {
		flags |= nhi.RingNoInterrupt
	}
	tx, err := s.cfg.Data.NHI.AllocTxRing(nhi.RingConfig{Hop: -1, Size: st.ringSize, Flags: flags, Notify: st.ringNotify})
	if err != nil {
		return nil, fmt.Errorf("allocate tx ring: %w", err)
	}
	rx, err := s.cfg.Data.NHI.AllocRxRing(nhi.RingConfig{
		Hop: -1, Size: st.ringSize, Flags: flags, E2ETxHop: tx.Hop(),
		SOFMask: 1 << PDFFrameStart, EOFMask: 1<<PDFData | 1<<PDFClose,
		Notify: st.ringNotify,
	})
	if err != nil {
		tx.Free()
		return nil, fmt.Errorf("allocate rx ring: %w", err)
	}
	d := &rings{
		tx: tx, rx: rx,
		route:    st.svc.XDomain().ID.Route,
		paths:    xdomain.DMAPaths{TransmitPath: st.out, TransmitRing: tx.Hop(), ReceivePath: st.in, ReceiveRing: rx.Hop()},
		readSem:  make(chan struct{}, 1),
		writeSem: make(chan struct{}, 1),
	}
	fail := func(err error) (*rings, error) {
		tx.Free()
		rx.Free()
		return nil, err
	}
	if err := tx.SetThrottling(st.throttling); err != nil {
		return fail(err)
	}
	if err := rx.SetThrottling(st.throttling); err != nil {
		return fail(err)
	}
	if err := tx.Start(); err != nil {
		return fail(err)
	}
	if err := rx.Start(); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pathTimeout)
	defer cancel()
	if err := xdomain.EnableDMAPaths(ctx, s.cfg.Data.Control, d.route, d.paths); err != nil {
		return fail(fmt.Errorf("enable paths %+v: %w", d.paths, err))
	}
	return d, nil
}

// stop is the last close: one CLOSE frame, TX drained while it makes
// progress, both rings stopped, paths disabled if the peer is still there,
// rings freed.
func (st *Stream) stop(d *rings, attached bool, busyPoll bool) {
	if busyPoll {
		deadline := time.Now().Add(flushIdle)
		for d.tx.TxFree() == 0 && time.Now().Before(deadline) {
			d.tx.Poll()
			runtime.Gosched()
		}
	}
	if slot, err := d.tx.TxSlot(); err == nil {
		clear(slot[:CloseFrameSize])
		_ = d.tx.TxPost(CloseFrameSize, PDFFrameStart, PDFClose)
	} else {
		st.g.s.log.Warn("no free TX slot for the CLOSE frame; the peer will not see EOF", "stream", st.name)
	}
	// Linux gives the flush 500 ms in all; losing queued data because a
	// slow reader took longer is not what a user wants, so wait while the
	// ring keeps moving.
	for {
		before := d.tx.Stats().Completed
		ctx, cancel := context.WithTimeout(context.Background(), flushIdle)
		err := d.tx.Flush(ctx)
		cancel()
		if err == nil || d.tx.Stats().Completed == before {
			break
		}
	}
	d.tx.Stop()
	d.rx.Stop()
	if attached {
		ctx, cancel := context.WithTimeout(context.Background(), pathTimeout)
		if err := xdomain.DisableDMAPaths(ctx, st.g.s.cfg.Data.Control, d.route, d.paths); err != nil {
			st.g.s.log.Warn("cannot disable DMA paths", "stream", st.name, "err", err)
		}
		cancel()
	}
	d.tx.Free()
	d.rx.Free()
}

// ringNotify runs on the NHI's interrupt goroutine after completions.
func (st *Stream) ringNotify() { st.signal() }

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

// Read returns the bytes of consecutive DATA frames, in place in the RX
// slots (the reply is written from them and the slots are re-posted when it
// has been delivered). A CLOSE frame is EOF when it is the first thing to
// read; after it, and after rmdir, reads return EOF.
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
	return h.gather(req.Size, release)
}

// gather builds the reply from completed frames.
func (h *handle) gather(size int, release func()) (cuse.ReadResult, error) {
	st, d := h.st, h.d
	var (
		bufs   [][]byte
		total  int
		full   int // frames consumed whole
		newOff int // offset into the first frame not consumed
		errs   uint64
	)
	ready := d.rx.RxReady()
	for i := 0; i < ready && total < size; i++ {
		f, err := d.rx.RxFrame(i)
		if err != nil {
			break
		}
		if f.EOF == PDFClose {
			if total == 0 {
				_ = d.rx.RxRelease(1)
				d.rxOff = 0
				st.mu.Lock()
				st.closed = true
				st.mu.Unlock()
				st.signal()
				release()
				return cuse.ReadResult{}, nil
			}
			break
		}
		if f.Flags != 0 {
			errs++
		}
		off := 0
		if i == 0 {
			off = d.rxOff
		}
		data := f.Data[off:]
		take := min(len(data), size-total)
		bufs = append(bufs, data[:take])
		total += take
		if take < len(data) {
			newOff = off + take
			break
		}
		full++
	}
	return cuse.ReadResult{Data: bufs, Done: func(delivered bool) {
		if delivered {
			_ = d.rx.RxRelease(full)
			d.rxOff = newOff
			st.mu.Lock()
			st.stats.RxBytes += uint64(total)
			st.stats.RxFrames += uint64(full)
			st.stats.RxFrameErrors += errs
			st.mu.Unlock()
		}
		release()
	}}, nil
}

// Write queues the payload as frames of up to 4096 bytes (SOF FRAME_START,
// EOF DATA). It waits for a first free slot (EAGAIN with O_NONBLOCK), then
// queues what fits: a short write when the ring fills, as Linux 7.3.
func (h *handle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	st, d := h.st, h.d
	busy, err := h.check(true)
	if err != nil {
		return 0, err
	}
	if err := acquire(ctx, d.writeSem, req.Nonblock()); err != nil {
		return 0, err
	}
	defer func() { <-d.writeSem }()
	for {
		ch := st.waitChan()
		if _, err := h.check(true); err != nil {
			return 0, err
		}
		if d.tx.TxFree() > 0 {
			break
		}
		if req.Nonblock() {
			return 0, syscall.EAGAIN
		}
		if err := st.wait(ctx, ch, d, busy); err != nil {
			return 0, err
		}
	}
	src := payload{bufs: req.Data}
	sent, frames := 0, 0
	for !src.empty() {
		slot, err := d.tx.TxSlot()
		if err != nil {
			if sent == 0 && !errors.Is(err, nhi.ErrRingFull) {
				return 0, syscall.ENXIO
			}
			break
		}
		n := src.fill(slot[:nhi.MaxFrameSize])
		if err := d.tx.TxPost(n, PDFFrameStart, PDFData); err != nil {
			if sent == 0 {
				return 0, syscall.ENXIO
			}
			break
		}
		src.advance(n)
		sent += n
		frames++
	}
	st.mu.Lock()
	st.stats.TxBytes += uint64(sent)
	st.stats.TxFrames += uint64(frames)
	st.mu.Unlock()
	return sent, nil
}

// payload walks the slices of a WRITE.
type payload struct {
	bufs [][]byte
	off  int
}

func (p *payload) empty() bool {
	for len(p.bufs) > 0 && p.off == len(p.bufs[0]) {
		p.bufs, p.off = p.bufs[1:], 0
	}
	return len(p.bufs) == 0
}

// fill copies up to len(dst) bytes without consuming them.
func (p *payload) fill(dst []byte) int {
	n, off := 0, p.off
	for _, b := range p.bufs {
		n += copy(dst[n:], b[off:])
		off = 0
		if n == len(dst) {
			break
		}
	}
	return n
}

func (p *payload) advance(n int) {
	for n > 0 {
		k := min(n, len(p.bufs[0])-p.off)
		p.off += k
		n -= k
		if p.off == len(p.bufs[0]) {
			p.bufs, p.off = p.bufs[1:], 0
		}
	}
}

// Poll reports readiness with Linux's masks: ERR alone in busy-poll mode
// (nothing could wake a poller), HUP|ERR without a valid stream, OUT with a
// free TX slot, IN with a completed RX frame (the CLOSE frame included).
func (h *handle) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	st, d := h.st, h.d
	st.mu.Lock()
	busy, err := st.busyPoll, st.validLocked()
	st.mu.Unlock()
	if busy {
		return cuse.EventErr, nil
	}
	if err != nil {
		return cuse.EventHup | cuse.EventErr, nil
	}
	var mask uint32
	if d.tx.TxFree() > 0 {
		mask |= cuse.EventOut | cuse.EventWrNorm
	}
	if d.rx.RxReady() > 0 {
		mask |= cuse.EventIn | cuse.EventRdNorm
	}
	return mask, nil
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
	attached := st.svc != nil && !st.svc.XDomain().Unplugged()
	busy, removed := st.busyPoll, st.removed
	st.mu.Unlock()
	st.stop(d, attached, busy)
	st.signal()
	if removed {
		st.mu.Lock()
		st.releaseHopIDsLocked()
		st.mu.Unlock()
		// Close from a goroutine: this Release runs inside the device's
		// own server, which Close waits for.
		go st.node.Close()
		st.g.s.freeIndex(st.index)
	}
}
