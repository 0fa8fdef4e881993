package stream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
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
	// flushIdle is how long the last close waits for the TX ring to make
	// progress, and how long a busy-poll close reaps for a free slot for
	// the CLOSE frame: Linux's tb_ring_flush timeout.
	flushIdle = 500 * time.Millisecond
	// drainMax bounds the whole TX drain of a close whose peer keeps
	// reading: a full ring of 4095 frames (16 MiB) leaves in that time at
	// 1.6 MiB/s.
	drainMax = 10 * time.Second
	// pathTimeout bounds enabling or disabling DMA paths (control-channel
	// round trips to our own host router, normally well under 1 ms).
	pathTimeout = 5 * time.Second
)

// ringState is where a ring pair is in its life; it changes under
// Stream.mu, and the work between two states runs with no lock held.
type ringState int

const (
	ringStarting ringState = iota // the opener allocates rings and enables paths
	ringOpen                      // handles use it
	ringStopping                  // the last close drains and takes it down
)

func (s ringState) String() string {
	switch s {
	case ringStarting:
		return "starting"
	case ringOpen:
		return "open"
	case ringStopping:
		return "stopping"
	}
	return fmt.Sprintf("ringState(%d)", int(s))
}

// startParams are the attributes and the attachment a ring pair is
// started with, taken under Stream.mu.
type startParams struct {
	svc        *xdomain.Service
	in, out    int
	ringSize   int
	throttling uint32
	busyPoll   bool
}

// rings is the TX/RX ring pair of an open stream and the DMA paths between
// them and the lane adapter. A stream has one ring pair its new opens
// share (Stream.data); a pair whose peer went away keeps serving its old
// handles ENXIO until they close.
type rings struct {
	p     startParams
	route ctl.Route
	// Set by the opener while starting, read-only once the pair is open.
	tx, rx  *nhi.Ring
	paths   xdomain.DMAPaths
	pathsUp bool // EnableDMAPaths succeeded

	// Under Stream.mu.
	state ringState
	users int
	// stale: the attachment the pair was set up for went away (detach).
	// Reads and writes fail with ENXIO and poll says HUP|ERR, also after a
	// re-attach: the pair's paths are for the old HopIDs, and new opens
	// get a fresh pair.
	stale bool

	// gone is cancelled at detach: a close draining toward a peer that is
	// no longer there stops at once.
	gone       context.Context
	cancelGone context.CancelFunc
	// pathsOff disables the paths once, by whoever gets there first (the
	// detach's retirement or the last close); the others wait for it.
	pathsOff sync.Once
	// flushGaveUp: a FLUSH found bytes that would not go and failed
	// close(2) with EIO; the release after it does not wait again.
	flushGaveUp atomic.Bool

	readSem  chan struct{} // one READ at a time owns the RX frames
	writeSem chan struct{} // one WRITE at a time fills TX slots
	// Owned by the holder of readSem: the bytes of the oldest RX frame
	// already read, and the gather's scratch runs.
	rxOff  int
	rxRuns [][]byte
	// Owned by the holder of writeSem, then by the last close: the copy
	// path's reservation of TX ring buffers, the frames posted so far, and the last batches posted (at
	// most ring_size-1 frames are in flight, so no older batch can be).
	txBufs   nhi.TxBuffers
	txFrames uint64
	txLog    []txBatch
	txSeq    int
}

// txBatch is one TxCommit: end is txFrames after it.
type txBatch struct {
	end    uint64
	frames int
	bytes  int
}

func newRings(p startParams) *rings {
	d := &rings{
		p:        p,
		route:    p.svc.XDomain().ID.Route,
		state:    ringStarting,
		readSem:  make(chan struct{}, 1),
		writeSem: make(chan struct{}, 1),
		txLog:    make([]txBatch, p.ringSize),
	}
	d.gone, d.cancelGone = context.WithCancel(context.Background())
	return d
}

// logTx records a batch of frames posted by Write.
func (d *rings) logTx(frames, bytes int) {
	d.txFrames += uint64(frames)
	d.txLog[d.txSeq%len(d.txLog)] = txBatch{end: d.txFrames, frames: frames, bytes: bytes}
	d.txSeq++
}

// unsent is how many of the bytes Write posted were not completed by the
// TX ring, given its completed frame count (frames complete in order; a
// batch's frames are full but the last).
func (d *rings) unsent(completed uint64) uint64 {
	var n uint64
	for i := max(0, d.txSeq-len(d.txLog)); i < d.txSeq; i++ {
		b := d.txLog[i%len(d.txLog)]
		start := b.end - uint64(b.frames)
		if completed >= b.end {
			continue
		}
		done := 0
		if completed > start {
			done = int(completed - start)
		}
		n += uint64(b.bytes - min(b.bytes, done*nhi.SlotSize))
	}
	return n
}

// start is tbstream_dev_start in the order thunderbolt-net uses and the
// design asks for: allocate both rings, start them with RX primed, then
// enable the paths, so that no frame arrives before a buffer waits. It
// runs with no lock held: path set-up is control-channel I/O. On error
// everything it did is undone.
func (st *Stream) start(ctx context.Context, d *rings) error {
	s := st.g.s
	flags := nhi.RingFrame | nhi.RingE2E
	if d.p.busyPoll {
		flags |= nhi.RingNoInterrupt
	}
	tx, err := s.cfg.Data.NHI.AllocTxRing(nhi.RingConfig{Hop: -1, Size: d.p.ringSize, Flags: flags, Notify: st.ringNotify})
	if err != nil {
		return fmt.Errorf("allocate tx ring: %w", err)
	}
	rx, err := s.cfg.Data.NHI.AllocRxRing(nhi.RingConfig{
		Hop: -1, Size: d.p.ringSize, Flags: flags, E2ETxHop: tx.Hop(),
		SOFMask: 1 << PDFFrameStart, EOFMask: 1<<PDFData | 1<<PDFClose,
		Notify: st.ringNotify,
	})
	if err != nil {
		tx.Free()
		return fmt.Errorf("allocate rx ring: %w", err)
	}
	fail := func(err error) error {
		rx.Free()
		tx.Free()
		return err
	}
	if err := tx.SetThrottling(d.p.throttling); err != nil {
		return fail(fmt.Errorf("tx ring throttling: %w", err))
	}
	if err := rx.SetThrottling(d.p.throttling); err != nil {
		return fail(fmt.Errorf("rx ring throttling: %w", err))
	}
	if err := tx.Start(); err != nil {
		return fail(fmt.Errorf("start tx ring: %w", err))
	}
	if err := rx.Start(); err != nil {
		return fail(fmt.Errorf("start rx ring: %w", err))
	}
	paths := xdomain.DMAPaths{TransmitPath: d.p.out, TransmitRing: tx.Hop(), ReceivePath: d.p.in, ReceiveRing: rx.Hop()}
	// Not the opener's context: an interrupted open must not leave half
	// a path behind (EnableDMAPaths unwinds with the context it has).
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pathTimeout)
	defer cancel()
	if err := xdomain.EnableDMAPaths(pctx, s.cfg.Data.Control, d.route, paths); err != nil {
		return fail(fmt.Errorf("enable paths %+v: %w", paths, err))
	}
	d.tx, d.rx, d.paths, d.pathsUp = tx, rx, paths, true
	return nil
}

// closeResult is what a last close could not do.
type closeResult struct {
	undelivered uint64 // bytes written and never sent
	eofSent     bool   // the CLOSE frame left the TX ring
	reason      string // why the drain ended early, "" if it did not
	peerEnded   bool   // no CLOSE and no drain: the peer had closed (see peerEnded)
}

// stop is the last close of d (no handle of it is left): while the peer
// is there, one CLOSE frame and the TX drain (while the ring keeps moving:
// flushIdle without progress, or drainMax in all, ends it); then both
// rings stopped, the paths disabled and the rings freed. It runs with no
// lock held and returns what did not reach the peer.
func (st *Stream) stop(d *rings, peer bool) closeResult {
	ended := st.peerEnded(d)
	// Nothing reads d any more, so RX stops first: its credits go back at
	// once, and what the peer sends from now on (a writer opened for the
	// next session, while this close drains) waits at the peer for the
	// next ring pair instead of filling these slots and going with them.
	// Linux stops RX last and loses those frames.
	d.rx.Stop()
	var res closeResult
	switch {
	case !peer:
		res.reason = "peer gone"
	case ended:
		// The session this pair was part of is over on both ends: a CLOSE
		// now could only reach the peer's next session, as a stale EOF.
		res.peerEnded = true
	default:
		res = st.drain(d)
	}
	d.tx.Stop()
	// The path entries are in our own host router: they outlive an
	// unplugged peer, and left behind they would route the next stream
	// given these rings to the old HopIDs. So they go, attached or not.
	st.disablePaths(d)
	res.undelivered = d.unsent(d.tx.Stats().Completed)
	d.tx.Free()
	d.rx.Free()
	d.cancelGone()
	return res
}

// peerEnded reports whether d only ever read (it sent no frame) and the
// peer's CLOSE has arrived on it: read, or waiting behind unread data.
func (st *Stream) peerEnded(d *rings) bool {
	if d.txFrames > 0 {
		return false
	}
	st.mu.Lock()
	closed := st.closed
	st.mu.Unlock()
	if closed {
		return true
	}
	if d.p.busyPoll {
		d.rx.Poll()
	}
	return d.rx.RxGather(d.rxRuns[:0], d.rxOff, math.MaxInt, 0, 1<<PDFClose).Stopped
}

// drain posts the CLOSE frame and waits for the TX ring to empty.
func (st *Stream) drain(d *rings) closeResult {
	var res closeResult
	deadline := time.Now().Add(drainMax)
	gaveUp := d.flushGaveUp.Load()
	noSlot := ""
	if gaveUp {
		// The FLUSH before this release waited already and told close(2):
		// the CLOSE goes if a slot is free, and nothing waits again.
		if d.tx.TxReserve(&d.txBufs, 1) != nil {
			noSlot = "no slot for the CLOSE frame"
		}
	} else {
		noSlot = reserveClose(d, deadline)
	}
	closePosted := noSlot == "" && postClose(d)
	switch {
	case gaveUp:
		res.reason = "the flush at close(2) gave up"
	case noSlot != "":
		res.reason = noSlot
	default:
		res.reason = waitSent(d.gone, d, deadline)
	}
	res.eofSent = closePosted && d.tx.Stats().Completed >= d.txFrames
	return res
}

// postClose posts the CLOSE frame into the slot reserved in d.txBufs.
func postClose(d *rings) bool {
	defer d.txBufs.Release()
	clear(d.txBufs.Runs()[0][:CloseFrameSize])
	if _, err := d.tx.TxCommit(&d.txBufs, CloseFrameSize, PDFFrameStart, PDFClose); err != nil {
		return false
	}
	d.txFrames++
	return true
}

// reserveClose reserves the TX slot for the CLOSE frame, waiting for one
// while the ring keeps moving (flushIdle without progress, the peer's
// going or deadline ends the wait). Linux takes a slot only if one is free
// (reaping for flushIdle in busy mode): a close right after writes that
// filled the ring loses the CLOSE, and the peer's reader never sees EOF.
// It returns why no slot was reserved, "" if one was.
func reserveClose(d *rings, deadline time.Time) string {
	for {
		err := d.tx.TxReserve(&d.txBufs, 1)
		if err == nil {
			return ""
		}
		if !errors.Is(err, nhi.ErrRingFull) {
			return "no slot for the CLOSE frame: " + err.Error()
		}
		before := d.tx.Stats().Completed
		wait := min(flushIdle, time.Until(deadline))
		if d.p.busyPoll {
			// No interrupt frees a slot: reap by hand, as Linux 7.3 does.
			end := time.Now().Add(wait)
			for d.tx.TxFree() == 0 && time.Now().Before(end) && d.gone.Err() == nil {
				d.tx.Poll()
				runtime.Gosched()
			}
		} else {
			c, cancel := context.WithTimeout(d.gone, wait)
			d.tx.WaitTx(c)
			cancel()
		}
		switch {
		case d.gone.Err() != nil:
			return "peer gone"
		case d.tx.Stats().Completed == before:
			return "no slot for the CLOSE frame: no progress for " + flushIdle.String()
		case !time.Now().Before(deadline):
			return "no slot for the CLOSE frame after " + drainMax.String()
		}
	}
}

// waitSent waits until the TX ring has sent all that was posted: Linux
// gives the flush 500 ms in all; losing queued data because a slow reader
// took longer is not what a user wants, so it waits while the ring keeps
// moving, up to deadline. It returns why it stopped early, "" if it did
// not; ctx (or the peer's going) ends it at once.
func waitSent(ctx context.Context, d *rings, deadline time.Time) string {
	for {
		before := d.tx.Stats().Completed
		c, cancel := context.WithTimeout(ctx, min(flushIdle, time.Until(deadline)))
		err := d.tx.Flush(c)
		cancel()
		switch {
		case err == nil:
			return ""
		case d.gone.Err() != nil:
			return "peer gone"
		case ctx.Err() != nil:
			return "interrupted"
		case d.tx.Stats().Completed == before:
			return "no progress for " + flushIdle.String()
		case !time.Now().Before(deadline):
			return "still draining after " + drainMax.String()
		}
	}
}

// disablePaths takes d's DMA paths down once (whoever calls first does
// the I/O, later callers wait for it) and then lets go of d's place in
// Stream.live: a new ring pair may be started for the same HopIDs, and a
// removed stream may release them.
func (st *Stream) disablePaths(d *rings) {
	d.pathsOff.Do(func() {
		if d.pathsUp {
			ctx, cancel := context.WithTimeout(context.Background(), pathTimeout)
			if err := xdomain.DisableDMAPaths(ctx, st.g.s.cfg.Data.Control, d.route, d.paths); err != nil {
				st.g.s.log.Warn("cannot disable DMA paths", "stream", st.path(), "err", err)
			}
			cancel()
		}
		st.mu.Lock()
		st.dropLiveLocked(d)
		st.mu.Unlock()
		st.signal()
		st.idle()
	})
}

// retire takes down the paths of a pair whose peer went away while it was
// open; its rings stay until its last handle closes.
func (st *Stream) retire(d *rings) { st.disablePaths(d) }

// ringNotify runs when a ring's completions were reaped: on the NHI's
// interrupt goroutine, or on the goroutine that looked at the ring, maybe
// under NHI locks. signal only closes a channel and kicks the notifier.
func (st *Stream) ringNotify() { st.signal() }
