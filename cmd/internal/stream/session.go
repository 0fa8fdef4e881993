package stream

import (
	"bytes"
	"context"
	"math"
	"runtime"
	"syscall"
	"time"
)

// Sessions: the package doc states the model; this file keeps it. The
// moments a session changes hands are the peer's CLOSE arriving
// (rxNotify, peerClose), the last close (endSession: answer or linger) and
// the next start (Open: owed CLOSE, await, carry).

// closeProbe is how long the CLOSE of a session that never exchanged a
// frame with the peer may take to leave: a peer session that is there
// holds credits for it, so it leaves at once; one that does not leave in
// this time has nobody to tell, and is taken back rather than left to
// reach the peer's next session.
const closeProbe = 20 * time.Millisecond

// txPoll is how often a close waiting for TX looks at the ring: its last
// frames may complete with no interrupt.
const txPoll = time.Millisecond

// awaitMax is how long a session waits for the CLOSE that ends what the
// peer sent for our last one (Stream.await). That CLOSE is lost when the
// peer answered while no ring pair of ours was up to take it, and a wait
// for it would then last until the peer's next session ends, whose reader
// may be waiting for this session's bytes. After awaitMax the session
// goes on as if it had come.
const awaitMax = flushIdle

// resetSessionsLocked forgets what sessions left to the next: a new
// attachment (or none) starts from a clean wire on both ends.
func (st *Stream) resetSessionsLocked() {
	st.await, st.owe, st.carry, st.carryClose = 0, 0, nil, false
}

// rxNotify is the RX ring's Notify (no lock held; on the interrupt
// goroutine or whichever reaped): it wakes the waiters, a parked READ
// answered from here (signalHere), and looks at the newly completed
// frames for a CLOSE, so that a session learns of the peer's end without
// reading. The search reads descriptors only; what it finds is handled on
// a goroutine of its own (peerClose).
func (st *Stream) rxNotify(d *rings) {
	st.signalHere()
	if d.closeFound.Load() {
		return
	}
	_, found, end := d.rx.RxFind(d.scanFrom.Load(), 1<<PDFClose)
	if !found {
		for cur := d.scanFrom.Load(); cur < end && !d.scanFrom.CompareAndSwap(cur, end); cur = d.scanFrom.Load() {
		}
		return
	}
	if d.closeFound.CompareAndSwap(false, true) {
		go st.peerClose(d)
	}
}

// closeArrived reports whether the peer's CLOSE has completed on d (in
// the RX ring, or in what the last session carried over).
func (st *Stream) closeArrived(d *rings) bool {
	if d.p.busyPoll {
		d.rx.Poll()
	}
	if d.closeFound.Load() {
		return true
	}
	_, found, _ := d.rx.RxFind(d.scanFrom.Load(), 1<<PDFClose)
	return found
}

// peerClose handles a CLOSE that arrived on d. On a pair that awaited it,
// it is the end of what the peer sent for our last session (consumeMatch).
// On an open pair, the peer's session ended first: nothing more is taken
// for this session (the RX path goes down; reads still get what came
// before the CLOSE, then EOF), writes fail with ENXIO, what is queued is
// discarded and counted, and, to a peer that keeps sessions, our CLOSE
// answers. On a pair that is closing, the last close handles it.
func (st *Stream) peerClose(d *rings) {
	for {
		ch := st.waitChan()
		st.mu.Lock()
		if d.state != ringStarting {
			break
		}
		st.mu.Unlock()
		select {
		case <-ch:
		case <-d.gone.Done():
			return
		}
	}
	if d.state != ringOpen || d.handled != nil || d.stale {
		// A closing pair's last close takes the CLOSE itself.
		st.mu.Unlock()
		st.signal()
		return
	}
	if d.awaiting {
		st.mu.Unlock()
		st.consumeMatch(d)
		return
	}
	d.peerClosed = true
	d.handled = make(chan struct{})
	st.mu.Unlock()
	defer close(d.handled)
	d.endIt() // a FLUSH waiting for the drain gives up
	st.signal()

	st.takeDown(d, true, false)
	if err := acquire(d.gone, d.writeSem, false); err != nil {
		return // detached: nothing to discard toward, nobody to answer
	}
	n, err := d.discardTx()
	if err == nil && d.p.sessions {
		err = answer(d)
	}
	<-d.writeSem
	if err != nil {
		st.g.s.log.Warn("cannot answer the peer's CLOSE", "stream", st.path(), "err", err)
	}
	st.mu.Lock()
	d.undelivered += n
	st.stats.Undelivered += n
	st.mu.Unlock()
	st.signal()
	if n > 0 {
		st.g.s.log.Warn("the peer's session ended: written bytes discarded", "stream", st.path(), "undelivered_bytes", n)
	}
}

// answer posts the CLOSE that answers the peer's (its slot is free: TX
// was just emptied).
func answer(d *rings) error {
	if err := d.tx.TxReserve(&d.txBufs, 1); err != nil {
		return err
	}
	if !postClose(d) {
		return syscall.ENXIO
	}
	d.ownEnd = d.txFrames
	return nil
}

// consumeMatch ends an await: the CLOSE arrived that ends what the peer
// sent for our last session; it and what came before it are discarded,
// and reads and writes go on.
func (st *Stream) consumeMatch(d *rings) {
	if err := acquire(d.gone, d.readSem, false); err != nil {
		return
	}
	st.mu.Lock()
	awaiting := d.awaiting
	st.mu.Unlock()
	if !awaiting {
		// Given up meanwhile (giveUpAwait): this CLOSE ends the peer's
		// session.
		<-d.readSem
		st.peerClose(d)
		return
	}
	matched, n := st.dropStale(d)
	<-d.readSem
	st.mu.Lock()
	st.stats.RxDiscarded += n
	if matched && st.await > 0 {
		st.await--
		d.awaiting = st.await > 0
	}
	st.mu.Unlock()
	st.signal()
	if matched {
		// Look for the next CLOSE from the frame after this one (dropStale
		// released it: the search cannot find it again).
		d.scanFrom.Store(d.rx.RxSeq())
		d.closeFound.Store(false)
		st.rxNotify(d)
	}
}

// dropStale discards the completed RX frames up to the first CLOSE, which
// it discards too (matched), and returns the bytes discarded. The caller
// holds readSem.
func (st *Stream) dropStale(d *rings) (matched bool, discarded uint64) {
	if d.p.busyPoll {
		d.rx.Poll()
	}
	g := d.rx.RxGather(d.rxRuns[:0], d.rxOff, math.MaxInt, 0, 1<<PDFClose)
	d.rxRuns = g.Runs[:0]
	n := g.Frames
	if g.Stopped {
		n++
	}
	if n > 0 {
		_ = d.rx.RxRelease(n)
		d.rxOff = 0
	}
	return g.Stopped, uint64(g.Bytes)
}

// carryRest keeps the completed RX frames, which the peer sent for our
// next session once it had ended this one, in Stream.carry (up to and
// including a CLOSE, the end of that session too) and releases them. The
// caller holds readSem.
func (st *Stream) carryRest(d *rings) {
	st.mu.Lock()
	full := st.carryClose
	st.mu.Unlock()
	if full {
		return
	}
	g := d.rx.RxGather(d.rxRuns[:0], 0, math.MaxInt, 0, 1<<PDFClose)
	d.rxRuns = g.Runs[:0]
	if g.Frames == 0 && !g.Stopped {
		return
	}
	kept := make([][]byte, 0, len(g.Runs))
	for _, r := range g.Runs {
		kept = append(kept, bytes.Clone(r))
	}
	n := g.Frames
	if g.Stopped {
		n++
	}
	_ = d.rx.RxRelease(n)
	st.mu.Lock()
	st.carry = append(st.carry, kept...)
	st.carryClose = g.Stopped
	st.mu.Unlock()
}

// closeResult is what a last close could not do.
type closeResult struct {
	undelivered uint64 // bytes written and never sent, or discarded
	discarded   uint64 // bytes received for this session and not read
	eofSent     bool   // our CLOSE (an answer, or our own) left the TX ring
	answered    bool   // the peer's session ended first
	reason      string // why the close ended early, "" if it did not
}

// endSession is the last close of a pair while the peer is there. If the
// peer's CLOSE has arrived (now, or while the session was open), this
// close answers it; otherwise this session ends first (linger).
func (st *Stream) endSession(d *rings) closeResult {
	// A CLOSE that arrives after this look is the match of ours (both
	// sessions ended at once), and the peer takes ours as its match.
	arrived := st.closeArrived(d)
	st.mu.Lock()
	handled := d.handled
	awaiting := d.awaiting
	if handled == nil && !awaiting && arrived {
		d.peerClosed = true
		d.handled = make(chan struct{})
		st.mu.Unlock()
		st.answerLast(d)
		close(d.handled)
	} else {
		st.mu.Unlock()
		if handled != nil {
			<-handled
		}
	}
	st.mu.Lock()
	peerClosed := d.peerClosed
	st.mu.Unlock()
	if !peerClosed {
		return st.linger(d)
	}
	res := closeResult{answered: true}
	if d.ownEnd > 0 {
		// The answer was posted; the peer lingers for it. One that does
		// not leave is owed (settle).
		res.reason = waitSent(d.gone, d, time.Now().Add(flushIdle))
		res.eofSent = d.tx.Stats().Completed >= d.ownEnd
	}
	return res
}

// answerLast is peerClose at the last close: the peer's CLOSE is there,
// nothing more is taken, what was queued is discarded, and a peer that
// keeps sessions gets our answer.
func (st *Stream) answerLast(d *rings) {
	st.takeDown(d, true, false)
	var n uint64
	if acquire(d.gone, d.readSem, false) == nil {
		_, n = st.dropStale(d)
		<-d.readSem
	}
	undelivered, err := d.discardTx()
	if err == nil && d.p.sessions {
		err = answer(d)
	}
	if err != nil {
		st.g.s.log.Warn("cannot answer the peer's CLOSE", "stream", st.path(), "err", err)
	}
	st.mu.Lock()
	st.stats.RxDiscarded += n
	st.stats.Undelivered += undelivered
	d.undelivered += undelivered
	st.mu.Unlock()
}

// linger is the last close of a session that ends first. Our CLOSE goes
// behind what is queued, and the RX ring keeps taking frames: what the
// peer sent for this session is discarded as it comes, until its CLOSE
// (its answer, or its own if both ended at once) marks the end of what it
// sent us; what follows that is the peer's next session's, carried over
// to ours (the RX path goes down first, so that nothing more comes). It
// ends:
//
//   - at the peer's CLOSE;
//   - when TX stops moving (flushIdle without progress), or after
//     drainMax: the peer does not read, and what is left is undelivered;
//   - for a CLOSE with nothing before it, sent by a session that
//     exchanged nothing with the peer, when the peer has not taken it
//     within closeProbe: no peer session is there to tell;
//   - for a peer that keeps sessions, flushIdle after our CLOSE left with
//     no answer: the stream then awaits it in the next session;
//   - for a Linux peer, once our CLOSE left: Linux sends its CLOSE only
//     at its own last close;
//   - at once when the peer goes away.
//
// A pair that still awaited the end of the peer's last session takes that
// CLOSE first, as the open pair would have.
func (st *Stream) linger(d *rings) closeResult {
	var res closeResult
	if acquire(d.gone, d.readSem, false) != nil {
		res.reason = "peer gone"
		return res
	}
	defer func() { <-d.readSem }()
	start := time.Now()
	deadline := start.Add(drainMax)
	completed := d.tx.Stats().Completed
	unsent := d.unsent(completed)
	st.mu.Lock()
	skip := 0
	if d.awaiting {
		skip = st.await
	}
	exchanged := d.txBytes > unsent || d.rx.RxSeq() > 0 || d.rx.RxReady() > 0 || len(d.carry) > 0 || d.carryClose
	st.mu.Unlock()
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
	if closePosted {
		d.ownEnd, d.initiated = d.txFrames, true
	}
	probe := closePosted && unsent == 0 && !exchanged
	var sentAt time.Time
	lastDone, lastProgress := completed, start
	for {
		ch := st.waitChan()
		// TX interrupts only while the ring is more than half full (see
		// nhi): the completions of a short tail are reaped here.
		d.tx.Poll()
		matched, n := st.dropStale(d)
		res.discarded += n
		if matched && skip > 0 {
			// A CLOSE that came before ours left ends what the peer sent
			// for our last session; one that came after answers ours (the
			// peer answers only what it took), and the CLOSE awaited was
			// lost: nothing is awaited any more.
			d.tx.Poll()
			answer := closePosted && d.tx.Stats().Completed >= d.ownEnd
			st.mu.Lock()
			awaited := !answer && d.awaiting
			if awaited {
				st.await--
				d.awaiting = st.await > 0
				skip--
			} else {
				st.await, d.awaiting, skip = 0, false, 0
			}
			st.mu.Unlock()
			if awaited {
				continue
			}
		}
		if matched {
			d.matched = true
			st.carryRest(d)
			st.takeDown(d, true, false)
			st.carryRest(d)
			res.undelivered, res.eofSent = st.matchClose(d, closePosted)
			return res
		}
		now := time.Now()
		done := d.tx.Stats().Completed
		if done != lastDone {
			lastDone, lastProgress = done, now
		}
		var next time.Time
		switch {
		case d.gone.Err() != nil:
			res.reason = "peer gone"
		case gaveUp:
			res.reason = "the flush at close(2) gave up"
		case !closePosted:
			res.reason = noSlot
		case done >= d.ownEnd:
			res.eofSent = true
			if sentAt.IsZero() {
				sentAt = now
			}
			if !d.p.sessions {
				return res
			}
			if next = sentAt.Add(flushIdle); !now.Before(next) {
				res.reason = "no answer to the CLOSE after " + flushIdle.String()
			}
		case probe:
			if next = start.Add(closeProbe); !now.Before(next) {
				res.reason = "no peer session"
			}
		default:
			next = lastProgress.Add(flushIdle)
			if deadline.Before(next) {
				next = deadline
			}
			switch {
			case !now.Before(deadline):
				res.reason = "still draining after " + drainMax.String()
			case !now.Before(next):
				res.reason = "no progress for " + flushIdle.String()
			}
		}
		if res.reason != "" {
			return res
		}
		if d.p.busyPoll {
			runtime.Gosched()
			continue
		}
		wait := time.Until(next)
		if done < d.txFrames {
			wait = min(wait, txPoll)
		}
		t := time.NewTimer(wait)
		select {
		case <-ch:
		case <-t.C:
		case <-d.gone.Done():
		}
		t.Stop()
	}
}

// postOwed posts the n CLOSE frames the stream owes the peer (see
// settle), before anything else of a new pair. What it cannot post stays
// owed.
func (d *rings) postOwed(n int) {
	d.owedWant, d.owedStart = n, d.txFrames
	for range n {
		if d.tx.TxReserve(&d.txBufs, 1) != nil || !postClose(d) {
			break
		}
	}
	d.owedEnd = d.txFrames
}

// settle records, once d's TX ring has stopped (nothing of it completes
// any more), what this session leaves to the next one: the CLOSEs owed to
// the peer that did not leave (owed ones it was given, its answer), and
// the CLOSE the peer owes us (it took ours, and its own had not come).
func (st *Stream) settle(d *rings, completed uint64) {
	owe := d.owedWant - int(min(completed, d.owedEnd)-min(completed, d.owedStart))
	await := 0
	switch {
	case d.ownEnd == 0:
	case completed < d.ownEnd && (!d.initiated || d.matched):
		owe++ // our answer, or our CLOSE the peer lingers for
	case completed >= d.ownEnd && d.initiated && !d.matched:
		await++
	}
	st.mu.Lock()
	st.owe += owe
	st.await += await
	st.mu.Unlock()
}

// matchClose is the end of a linger at the peer's CLOSE. If ours has
// left, that CLOSE was the peer's answer, or its own CLOSE crossing ours;
// either way it has ours. If ours has not (queued behind frames the peer
// did not take), the peer's session ended on its own and lingers for our
// CLOSE as we did for its: what we queued for that session is discarded,
// and a CLOSE goes at once, in front (closed, to settle, as our own). It
// returns the bytes discarded and whether our CLOSE left.
func (st *Stream) matchClose(d *rings, posted bool) (undelivered uint64, sent bool) {
	d.tx.Poll()
	if posted && d.tx.Stats().Completed >= d.ownEnd || !d.p.sessions {
		// (A Linux peer waits for nothing: what is left goes at stop.)
		return 0, posted && d.tx.Stats().Completed >= d.ownEnd
	}
	n, err := d.discardTx()
	if err == nil {
		err = answer(d)
	}
	if err != nil {
		st.g.s.log.Warn("cannot send the CLOSE the peer waits for", "stream", st.path(), "err", err)
		return n, false
	}
	d.initiated = true
	waitSent(d.gone, d, time.Now().Add(flushIdle))
	return n, d.tx.Stats().Completed >= d.ownEnd
}

// giveUpAwait ends d's wait for the peer's CLOSE after awaitMax: the open
// pair takes the next CLOSE as the end of the peer's session. It holds
// readSem, so that a CLOSE being consumed as the awaited one (which holds
// it too) is either that or not; while a close or a consume holds it, it
// looks again shortly.
func (st *Stream) giveUpAwait(d *rings) {
	if acquire(d.gone, d.readSem, true) != nil {
		if d.gone.Err() == nil {
			time.AfterFunc(10*txPoll, func() { st.giveUpAwait(d) })
		}
		return
	}
	defer func() { <-d.readSem }()
	st.mu.Lock()
	gaveUp := d.awaiting && st.data == d
	if gaveUp {
		st.await, d.awaiting = 0, false
	}
	st.mu.Unlock()
	if gaveUp {
		st.g.s.log.Debug("the CLOSE of the peer's last session did not come: not waiting for it", "stream", st.path(), "after", awaitMax)
		st.signal()
	}
}

// awaitWait blocks while d awaits the peer's CLOSE (reads and writes of
// a session wait for the end of what the peer sent for the last one).
func (h *handle) awaitWait(ctx context.Context, nonblock bool) error {
	st, d := h.st, h.d
	for {
		ch := st.waitChan()
		st.mu.Lock()
		awaiting := d.awaiting && !d.stale
		st.mu.Unlock()
		if !awaiting {
			return nil
		}
		if nonblock {
			return syscall.EAGAIN
		}
		if err := st.wait(ctx, ch, d, d.p.busyPoll); err != nil {
			return err
		}
	}
}

// touch is any I/O on h: a handle that was flushed is in use after all
// (a descriptor dup'ed before the close).
func (h *handle) touch() {
	if !h.flushed.Load() {
		return
	}
	h.st.mu.Lock()
	if h.flushed.Swap(false) {
		h.d.flushed--
	}
	h.st.mu.Unlock()
}
