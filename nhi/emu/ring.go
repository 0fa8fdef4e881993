package emu

import (
	mathbits "math/bits"
	"sync"
	"sync/atomic"

	"tbstream/nhi"
)

// maxBatch bounds descriptors one engine pass takes from a ring, so one
// busy ring cannot starve the others or delay socket flushes.
const maxBatch = 256

// ring is the NHI side of one TX or RX ring: its registers and the
// hardware's tail.
type ring struct {
	hop    int
	rx     bool
	head   atomic.Uint32 // software head, from the doorbell
	hwTail atomic.Uint32 // TX: tail as of the last pass, for the engine's idle check

	// mu protects the fields below; the engine holds it while it works on
	// the ring, so a disable returns only when the ring is idle.
	// Lock order: TX ring mu before any RX ring mu (TX processing delivers
	// into RX rings, also of the peer host).
	mu        sync.Mutex
	base      uint64
	count     int
	frameSize int    // RX: +12 high half, 0 = 4096
	flags     uint32 // options+0
	pdfMasks  uint32 // options+4: sof<<16 | eof
	enabled   bool
	desc      []byte // descriptor array, resolved at enable
	tail      int
	// RX with E2E: credits granted to the sender and not yet used, and
	// where they went.
	granted     int
	creditLane  *lane
	creditHopID uint16
}

func (r *ring) readBlock(f nhi.Reg) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch f {
	case nhi.RingAddrLo:
		return uint32(r.base)
	case nhi.RingAddrHi:
		return uint32(r.base >> 32)
	case nhi.RingIndices:
		if r.rx {
			return r.head.Load() | uint32(r.tail)<<nhi.RingRxTailShift
		}
		return uint32(r.tail) | r.head.Load()<<nhi.RingTxHeadShift
	case nhi.RingSizeReg:
		return uint32(r.count) | uint32(r.frameSize)<<nhi.RingFrameSizeShift
	}
	return 0
}

func (r *ring) readOptions(f nhi.Reg) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch f {
	case 0:
		return r.flags
	case nhi.RingOptionsPDF:
		return r.pdfMasks
	}
	return 0
}

func (r *ring) e2e() bool { return r.flags&nhi.RingFlagE2EFlowControl != 0 }
func (r *ring) raw() bool { return r.flags&nhi.RingFlagRaw != 0 }
func (r *ring) irqIndex(hopCount int) int {
	return nhi.InterruptIndex(hopCount, r.hop, r.rx)
}

// posted is the number of descriptors between the hardware tail and the
// software head. Called with mu held.
func (r *ring) postedLocked() int {
	head := int(r.head.Load())
	if head >= r.count {
		return 0
	}
	return (head - r.tail + r.count) % r.count
}

func (h *Host) writeBlock(r *ring, f nhi.Reg, v uint32) {
	switch f {
	case nhi.RingAddrLo:
		r.mu.Lock()
		r.base = r.base&^0xffffffff | uint64(v)
		r.mu.Unlock()
	case nhi.RingAddrHi:
		r.mu.Lock()
		r.base = r.base&0xffffffff | uint64(v)<<32
		r.mu.Unlock()
	case nhi.RingIndices:
		if r.rx {
			r.head.Store(v & nhi.RingIndexMask)
			if r.hop == 0 && h.replayPlug.Load() {
				h.replayPlugEvents(r)
			}
			// The credits for the new slots leave now, on the doorbell's
			// goroutine (which holds no ring lock of ours; a full socket
			// only makes it wait), not at the engine's next pass: one
			// wake-up less per round trip. A doorbell that grants nothing
			// (a stopping ring's reset, under the driver's locks) writes
			// nothing. Taking mu may wait for one frame being filled:
			// nothing holding an RX ring's mu calls the driver or waits.
			if h.grant(r) {
				h.flushCables()
			}
		} else {
			r.head.Store(v >> nhi.RingTxHeadShift & nhi.RingIndexMask)
			h.doorbellTx(r)
		}
	case nhi.RingSizeReg:
		r.mu.Lock()
		r.count = int(v & nhi.RingIndexMask)
		if r.rx {
			r.frameSize = int(v >> nhi.RingFrameSizeShift)
		}
		r.mu.Unlock()
	}
}

func (h *Host) writeOptions(r *ring, f nhi.Reg, v uint32) {
	switch f {
	case nhi.RingOptionsPDF:
		r.mu.Lock()
		r.pdfMasks = v
		r.mu.Unlock()
	case 0:
		if v&nhi.RingFlagEnable == 0 {
			h.disableRing(r)
			r.mu.Lock()
			r.flags = v
			r.mu.Unlock()
			h.kick() // the credit reset goes out with the engine's flush
			return
		}
		r.mu.Lock()
		r.flags = v
		if !r.enabled {
			r.desc = nil
			if r.count >= 2 {
				r.desc = h.mem.translate(r.base, r.count*nhi.DescSize)
			}
			if r.desc == nil {
				h.counters.dmaFault.Add(1)
				h.log.Warn("emu: ring enabled with unmapped descriptors", "hop", r.hop, "rx", r.rx, "base", r.base, "count", r.count)
				r.mu.Unlock()
				return
			}
			r.tail = 0
			r.hwTail.Store(0)
			r.enabled = true
			if r.rx && r.hop == 0 {
				h.replayPlug.Store(true)
			}
		}
		if r.rx {
			h.grantLocked(r)
		}
		r.mu.Unlock()
		h.kick()
	}
}

// replayPlugEvents sends a plug EVENT for every cable already plugged
// once a (re)started RX ring 0 has room for them, so a connection manager
// that starts after the cable learns about the peer the same way.
func (h *Host) replayPlugEvents(r *ring) {
	var cables []*Cable
	for _, l := range h.lanes {
		if c := l.cable.Load(); c != nil {
			cables = append(cables, c)
		}
	}
	r.mu.Lock()
	room := r.enabled && r.postedLocked() >= len(cables)
	r.mu.Unlock()
	if !room || !h.replayPlug.CompareAndSwap(true, false) {
		return
	}
	for _, c := range cables {
		h.router.plugEvent(c.port.PeerRoute, false)
	}
}

// disableRing stops the engine using r; in-flight descriptors stay as they
// are (the driver cancels them). Credits granted for an RX ring are
// withdrawn.
func (h *Host) disableRing(r *ring) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.enabled {
		return
	}
	r.enabled = false
	r.desc = nil
	if r.rx {
		h.withdrawLocked(r)
	}
}

// txPass moves up to maxBatch posted frames of TX ring r to their
// destination and reports whether any completed.
func (h *Host) txPass(r *ring) bool {
	if r.head.Load() == r.hwTail.Load() {
		return false
	}
	r.mu.Lock()
	return h.txPassLocked(r)
}

// doorbellTx reacts to a TX doorbell. A busy engine will find the frame
// on its next pass. An idle one is not woken: the frames are moved right
// away on the doorbell writer's goroutine, as a DMA engine would start on
// the doorbell, which saves a goroutine hand-off per burst, and the cable
// is flushed there too. The driver rings doorbells outside its ring locks,
// so this never holds up its completions.
func (h *Host) doorbellTx(r *ring) {
	if !h.idle.Load() {
		return
	}
	// A held ring is being moved already (by the engine waking up, or by
	// another doorbell): waiting for it gains nothing, and a doorbell rung
	// under the driver's locks (a ring stop) must not wait for a pass that
	// may call into the driver (a control-ring pass delivers the router's
	// reply and its interrupt inline). The kick makes the engine look
	// again.
	if !r.mu.TryLock() {
		h.kick()
		return
	}
	if h.txPassLocked(r) {
		h.flushCables() // on this goroutine too, as the credits above
	}
	if r.head.Load() != r.hwTail.Load() {
		// More than one batch, or frames waiting for credits. (Waiting
		// frames alone would not need it: arriving credits kick.)
		h.kick()
	}
}

// txPassLocked is txPass with r.mu held; it unlocks.
func (h *Host) txPassLocked(r *ring) bool {
	if !r.enabled || int(r.head.Load()) >= r.count {
		r.mu.Unlock()
		return false
	}
	head := int(r.head.Load())
	irq, n := false, 0
	var route txRoute
	if r.hop != 0 {
		route = h.router.txRoute(r.hop)
	}
loop:
	for r.tail != head && n < maxBatch {
		ctrl := nhi.LoadDescControl(r.desc, r.tail)
		size := nhi.ControlSize(ctrl)
		buf := h.mem.translate(nhi.LoadDescAddr(r.desc, r.tail), size)
		switch {
		case buf == nil || (r.raw() && size > nhi.FrameSize):
			h.counters.dmaFault.Add(1)
		case r.hop == 0:
			h.router.fromNHI(nhi.ControlEOF(ctrl), buf)
		default:
			if !h.sendFrame(r, route, ctrl, buf) {
				break loop
			}
		}
		nhi.StoreDescControl(r.desc, r.tail, ctrl|nhi.DescFlagCompleted)
		irq = irq || ctrl&nhi.DescFlagInterrupt != 0
		if r.tail++; r.tail == r.count {
			r.tail = 0
		}
		n++
	}
	r.hwTail.Store(uint32(r.tail))
	idx := r.irqIndex(h.hopCount)
	r.mu.Unlock()
	if irq {
		h.irq.raise(idx)
	}
	return n > 0
}

// sendFrame puts one TX frame on its path. It returns false when the frame
// must wait: an E2E ring with no path, no cable or no credit stalls rather
// than drops (credits flow only on an enabled path).
func (h *Host) sendFrame(r *ring, route txRoute, ctrl uint32, buf []byte) bool {
	e2e := r.e2e()
	if !route.ok {
		if e2e {
			return false
		}
		h.counters.txNoPath.Add(1)
		return true
	}
	l := h.lane(route.adapter)
	c := l.cable.Load()
	if c == nil {
		if e2e {
			return false
		}
		h.counters.txUnplugged.Add(1)
		return true
	}
	if e2e {
		credits := &l.credits[route.hopID]
		if credits.Load() <= 0 {
			// Starved, then look again: credits added before the flag
			// was set are seen here, those added after kick the engine.
			l.starved.Store(true)
			if credits.Load() <= 0 {
				return false
			}
		}
		credits.Add(-1)
	}
	c.end.sendData(route.hopID, nhi.ControlSOF(ctrl), nhi.ControlEOF(ctrl), buf)
	return true
}

// deliver is a data frame arriving on lane adapter l with HopID hopID: the
// lane adapter's path entry picks the RX ring. Its interrupt waits for
// the next flushIRQ, so one batch of frames raises one interrupt.
func (h *Host) deliver(l *lane, hopID uint16, sof, eof uint8, p []byte) {
	ringIdx, ok := h.router.rxRoute(l.adapter, hopID)
	if !ok {
		h.counters.rxNoPath.Add(1)
		return
	}
	r := h.rx[ringIdx]
	r.mu.Lock()
	irq := h.fillLocked(r, sof, eof, p)
	r.mu.Unlock()
	if irq {
		setBit(h.irqPending, r.irqIndex(h.hopCount))
	}
}

// flushIRQ raises the interrupts deliver deferred.
func (h *Host) flushIRQ() {
	for i := range h.irqPending {
		bits := h.irqPending[i].Swap(0)
		for bits != 0 {
			b := bits & -bits
			bits &^= b
			h.irq.raise(32*i + mathbits.TrailingZeros32(b))
		}
	}
}

// deliverControl puts a control frame on RX ring 0 with PDF pdf and
// interrupts at once.
func (h *Host) deliverControl(pdf uint8, frame []byte) {
	r := h.rx[0]
	r.mu.Lock()
	irq := h.fillLocked(r, pdf, pdf, frame)
	r.mu.Unlock()
	if irq {
		h.irq.raise(r.irqIndex(h.hopCount))
	}
}

// fillLocked writes one frame into the next posted descriptor of RX ring r
// and reports whether the descriptor asked for an interrupt.
func (h *Host) fillLocked(r *ring, sof, eof uint8, p []byte) (irq bool) {
	if !r.enabled {
		h.counters.rxRingStopped.Add(1)
		return false
	}
	// An E2E frame used one of our credits; if it is dropped below, the
	// descriptor it did not use is offered again.
	credited := false
	if r.e2e() && r.granted > 0 {
		r.granted--
		credited = true
	}
	drop := func(counter *atomic.Uint64) bool {
		counter.Add(1)
		if credited {
			h.grantLocked(r)
			h.kick() // the engine sends the credit offered again
		}
		return false
	}
	if !r.raw() {
		sofMask, eofMask := r.pdfMasks>>16, r.pdfMasks&0xffff
		if sofMask>>(sof&0xf)&1 == 0 || eofMask>>(eof&0xf)&1 == 0 {
			return drop(&h.counters.rxPDFMismatch)
		}
	}
	if r.postedLocked() == 0 {
		h.irq.overflow(r.hop)
		return drop(&h.counters.rxOverflow)
	}
	limit := r.frameSize
	if limit == 0 {
		limit = nhi.MaxFrameSize
	}
	ctrl := nhi.LoadDescControl(r.desc, r.tail)
	n, flags := len(p), nhi.DescFlagCompleted
	if n > limit {
		n, flags = limit, flags|nhi.DescFlagBufferOverrun
	}
	buf := h.mem.translate(nhi.LoadDescAddr(r.desc, r.tail), n)
	if buf == nil {
		return drop(&h.counters.dmaFault)
	}
	copy(buf, p[:n])
	nhi.StoreDescControl(r.desc, r.tail, nhi.ControlWord(n, sof, eof, flags))
	if r.tail++; r.tail == r.count {
		r.tail = 0
	}
	if credited && r.granted < r.creditLowWater() && h.grantLocked(r) {
		h.kick() // the engine sends the credits held back
	}
	return ctrl&nhi.DescFlagInterrupt != 0
}

// grant offers the sender one E2E credit per posted descriptor of RX ring
// r not yet offered, and reports whether it queued anything for the cable.
func (h *Host) grant(r *ring) (queued bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return h.grantLocked(r)
}

// grantLocked offers the credits of r's new posted descriptors (and
// withdraws those of a path that changed) and reports whether it queued
// anything for the cable.
func (h *Host) grantLocked(r *ring) (queued bool) {
	if !r.enabled || !r.e2e() {
		return false
	}
	src, ok := h.router.rxSource(r.hop)
	var l *lane
	var c *Cable
	if ok {
		l = h.lane(src.adapter)
		c = l.cable.Load()
	}
	if c == nil || r.creditLane != nil && (r.creditLane != l || r.creditHopID != src.hopID) {
		queued = r.creditLane != nil
		h.withdrawLocked(r)
	}
	if c == nil {
		return queued
	}
	if delta := r.postedLocked() - r.granted; delta > 0 && (r.granted < r.creditLowWater() || delta >= r.creditBatch()) {
		r.granted += delta
		r.creditLane, r.creditHopID = l, src.hopID
		h.counters.creditFrames.Add(1)
		c.end.sendCredit(src.hopID, int32(delta))
		queued = true
	}
	return queued
}

// Credits are returned in batches, so that a reader taking one frame at a
// time does not cost a cable frame (and a wake-up of the peer) per frame:
// new credits wait until a quarter of the ring has been re-posted, or until
// the sender holds less than half the ring. fillLocked grants when a frame
// takes the sender below that mark, so a sender never waits on credits
// that are held back.
func (r *ring) creditLowWater() int { return max(r.count/2, 1) }
func (r *ring) creditBatch() int    { return max(r.count/4, 1) }

// withdrawLocked cancels the credits RX ring r granted (path or ring
// disabled, cable gone).
func (h *Host) withdrawLocked(r *ring) {
	if r.creditLane != nil {
		if c := r.creditLane.cable.Load(); c != nil {
			c.end.sendCreditReset(r.creditHopID)
		}
	}
	r.granted, r.creditLane = 0, nil
}

// regrant re-evaluates the credits of every RX ring (after a path or cable
// change) and has the engine send them.
func (h *Host) regrant() {
	for _, r := range h.rx {
		h.grant(r)
	}
	h.kick()
}

func (h *Host) flushCables() {
	for _, l := range h.lanes {
		if c := l.cable.Load(); c != nil {
			c.end.flush()
		}
	}
}

// engine is the DMA engine: woken by TX doorbells, credits, path changes
// and plug events, it drains every TX ring until no progress is possible,
// then flushes the cables and sleeps.
//
// kick only wakes a sleeping engine. The engine announces sleep (idle)
// and then makes one more pass; a doorbell stores head and then reads
// idle. With both atomic, either the doorbell sees idle and wakes the
// engine, or that last pass sees the doorbell's work.
func (h *Host) engine() {
	defer h.engineWG.Done()
	for {
		if !h.pass() {
			h.idle.Store(true)
			if !h.pass() {
				select {
				case <-h.wake:
				case <-h.done:
					return
				}
			}
			h.idle.Store(false)
		}
	}
}

// pass gives every TX ring one turn and reports whether any frame moved.
func (h *Host) pass() bool {
	progress := false
	for _, r := range h.tx {
		if h.txPass(r) {
			progress = true
			h.flushCables()
		}
	}
	h.flushCables() // credits granted since the last pass
	return progress
}
