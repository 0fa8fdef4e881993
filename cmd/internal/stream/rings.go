package stream

import (
	"context"
	"fmt"
	"runtime"
	"time"

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
	// Owned by the holder of readSem: the bytes of the oldest RX frame
	// already read, and the gather's scratch runs.
	rxOff  int
	rxRuns [][]byte
	// Owned by the holder of writeSem.
	txRuns [][]byte
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
// progress, both rings stopped, paths disabled, rings freed.
func (st *Stream) stop(d *rings, attached bool, busyPoll bool) {
	if busyPoll {
		deadline := time.Now().Add(flushIdle)
		for d.tx.TxFree() == 0 && time.Now().Before(deadline) {
			d.tx.Poll()
			runtime.Gosched()
		}
	}
	if runs, err := d.tx.TxReserve(d.txRuns[:0], 1); err == nil {
		clear(runs[0][:CloseFrameSize])
		_ = d.tx.TxCommit(CloseFrameSize, PDFFrameStart, PDFClose)
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
	// The path entries are in our own host router: they outlive an
	// unplugged peer, and left behind they would route the next stream
	// given these rings to the old HopIDs. So they go, attached or not.
	ctx, cancel := context.WithTimeout(context.Background(), pathTimeout)
	if err := xdomain.DisableDMAPaths(ctx, st.g.s.cfg.Data.Control, d.route, d.paths); err != nil {
		st.g.s.log.Warn("cannot disable DMA paths", "stream", st.name, "attached", attached, "err", err)
	}
	cancel()
	d.tx.Free()
	d.rx.Free()
}

// ringNotify runs when a ring's completions were reaped: on the NHI's
// interrupt goroutine, or on the goroutine that looked at the ring.
func (st *Stream) ringNotify() { st.signal() }
