package stream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/xdomain"
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
	// sessions: the peer keeps session boundaries too (StnsSessions in
	// its service's protocol settings): it answers our CLOSE with its own,
	// and we answer its.
	sessions bool
}

// rings is the TX/RX ring pair of an open stream and the DMA paths between
// them and the lane adapter: one session (see the package doc). A stream
// has one ring pair its new opens share (Stream.data); a pair whose peer
// went away keeps serving its old handles ENXIO until they close.
type rings struct {
	p     startParams
	route ctl.Route
	// Set by the opener while starting, read-only once the pair is open.
	tx, rx *nhi.Ring
	paths  xdomain.DMAPaths

	// Under Stream.mu.
	state ringState
	users int
	// stale: the attachment the pair was set up for went away (detach).
	// Reads and writes fail with ENXIO and poll says HUP|ERR, also after a
	// re-attach: the pair's paths are for the old HopIDs, and new opens
	// get a fresh pair.
	stale bool
	// peerClosed: the peer's session ended while this one was open (its
	// CLOSE completed in RX): writes fail with ENXIO, reads return what
	// came before the CLOSE and then EOF. handled is closed once
	// peerClose has stopped RX taking frames, discarded TX and answered.
	peerClosed bool
	handled    chan struct{}
	// awaiting: the pair started while the stream awaited the peer's
	// CLOSE (Stream.await); until it arrives, what arrives before it is
	// discarded, and reads and writes wait.
	awaiting bool
	// undelivered: bytes discarded from TX when the peer closed.
	undelivered uint64
	// flushed counts the handles whose descriptor was closed (FLUSH) with
	// no I/O since: the FUSE fallback sends RELEASE after close(2)
	// returns, so such a handle is most likely on its way out.
	flushed int

	// The CLOSE search on every RX completion (rxNotify): the frames
	// before scanFrom hold no CLOSE; closeFound once one has arrived (or
	// the last session carried one over).
	scanFrom   atomic.Uint64
	closeFound atomic.Bool

	// gone is cancelled at detach: a close draining toward a peer that is
	// no longer there stops at once. ended is cancelled too when the
	// peer's session ends: a FLUSH waiting for the drain stops.
	gone, ended       context.Context
	cancelGone, endIt context.CancelFunc
	// pathMu serializes path I/O; rxUp and txUp are the directions still
	// enabled. pathsOff drops the pair from Stream.live once its paths
	// are down, by whoever gets there first (the detach's retirement or
	// the last close).
	pathMu     sync.Mutex
	rxUp, txUp bool
	pathsOff   sync.Once
	// flushGaveUp: a FLUSH found bytes that would not go and failed
	// close(2) with EIO; the release after it does not wait again.
	flushGaveUp atomic.Bool

	readSem chan struct{} // one READ at a time owns the RX frames
	// readBusy: a READ found readSem taken and answered EAGAIN (parked);
	// the holder's release wakes the handles so it is asked again.
	readBusy atomic.Bool
	writeSem chan struct{} // one WRITE at a time fills TX slots
	// Owned by the holder of readSem: the bytes of the oldest RX frame
	// already read, the gather's scratch runs, and what the last session
	// left for this one (Stream.carry), read before the RX ring.
	rxOff      int
	rxRuns     [][]byte
	carry      [][]byte
	carryClose bool
	// Owned by the holder of writeSem, then by the last close: the copy
	// path's reservation of TX ring buffers, the frames posted so far
	// (txFrames, counted against the ring's Completed), the bytes Write
	// posted, and the last batches posted (at most ring_size-1 frames
	// are in flight, so no older batch can be).
	txBufs   nhi.TxBuffers
	txFrames uint64
	txBytes  uint64
	txLog    []txBatch
	txSeq    int
	// The CLOSE frames this pair sent, each gone once the TX ring has
	// completed the frame count given: the ones the stream owed, posted
	// first (frames owedStart..owedEnd), and its own (ownEnd), our CLOSE
	// when initiated, else the answer; matched: the peer's CLOSE that
	// ends its side came (linger). stop settles Stream.owe and await.
	owedStart, owedEnd, ownEnd uint64
	owedWant                   int
	initiated, matched         bool
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
	d.ended, d.endIt = context.WithCancel(d.gone)
	return d
}

// logTx records a batch of frames posted by Write.
func (d *rings) logTx(frames, bytes int) {
	d.txFrames += uint64(frames)
	d.txBytes += uint64(bytes)
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

// discardTx stops the TX ring, which cancels what it had not sent, and
// starts it again empty; it returns the bytes of Write that went. The
// caller holds writeSem (or is the last close).
func (d *rings) discardTx() (uint64, error) {
	d.tx.Stop()
	completed := d.tx.Stats().Completed
	n := d.unsent(completed)
	d.txFrames, d.txSeq = completed, 0
	return n, d.tx.Start()
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
		Notify: func() { st.rxNotify(d) },
	})
	if err != nil {
		tx.Free()
		return fmt.Errorf("allocate rx ring: %w", err)
	}
	// Before anything can complete: rxNotify looks at d.rx.
	d.tx, d.rx = tx, rx
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
	d.pathMu.Lock()
	d.paths, d.rxUp, d.txUp = paths, true, true
	d.pathMu.Unlock()
	return nil
}

// stop is the last close of d (no handle of it is left): while the peer
// is there, the session's end (endSession: our answer to the peer's
// CLOSE, or our CLOSE and the wait for the peer's); then both rings
// stopped, the paths disabled and the rings freed. It runs with no lock
// held and returns what did not reach the peer.
func (st *Stream) stop(d *rings, peer bool) closeResult {
	var res closeResult
	if peer {
		res = st.endSession(d)
	} else {
		res.reason = "peer gone"
	}
	d.tx.Stop()
	d.rx.Stop()
	// The path entries are in our own host router: they outlive an
	// unplugged peer, and left behind they would route the next stream
	// given these rings to the old HopIDs. So they go, attached or not.
	st.disablePaths(d)
	completed := d.tx.Stats().Completed
	res.undelivered += d.unsent(completed)
	if peer && d.p.sessions {
		st.settle(d, completed)
	}
	d.tx.Free()
	d.rx.Free()
	d.cancelGone()
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

// takeDown disables the directions of d's paths that are still up among
// rx and tx (control-channel writes to our own host router, bounded by
// pathTimeout), one caller at a time.
func (st *Stream) takeDown(d *rings, rx, tx bool) {
	d.pathMu.Lock()
	defer d.pathMu.Unlock()
	var p xdomain.DMAPaths
	if rx && d.rxUp {
		p.ReceivePath, p.ReceiveRing = d.paths.ReceivePath, d.paths.ReceiveRing
		d.rxUp = false
	}
	if tx && d.txUp {
		p.TransmitPath, p.TransmitRing = d.paths.TransmitPath, d.paths.TransmitRing
		d.txUp = false
	}
	if p == (xdomain.DMAPaths{}) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), pathTimeout)
	defer cancel()
	if err := xdomain.DisableDMAPaths(ctx, st.g.s.cfg.Data.Control, d.route, p); err != nil {
		st.g.s.log.Warn("cannot disable DMA paths", "stream", st.path(), "err", err)
	}
}

// disablePaths takes d's DMA paths down (later callers wait for the I/O)
// and then, once, lets go of d's place in Stream.live: a new ring pair may
// be started for the same HopIDs, and a removed stream may release them.
func (st *Stream) disablePaths(d *rings) {
	st.takeDown(d, true, true)
	d.pathsOff.Do(func() {
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

// ringNotify runs when the TX ring's completions were reaped: on the
// NHI's interrupt goroutine, or on the goroutine that looked at the ring,
// maybe under NHI locks. Blocked writers wait on the channel; the wakers
// (on the notifier goroutine) are due only when a poll found no room
// since the last time (outWanted): a goroutine wake-up per completion
// saved.
func (st *Stream) ringNotify() {
	if st.outWanted.Swap(false) {
		st.signal()
		return
	}
	st.changedLocked()
}
