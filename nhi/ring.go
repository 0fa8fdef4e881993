package nhi

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// RingFlag are the allocation flags of a ring (RING_FLAG_* of
// include/linux/thunderbolt.h), not the hardware option bits.
type RingFlag uint32

const (
	RingNoSuspend   RingFlag = 1 << 0 // RING_FLAG_NO_SUSPEND
	RingFrame       RingFlag = 1 << 1 // RING_FLAG_FRAME: 4 KiB frames, PDF masks; else RAW
	RingE2E         RingFlag = 1 << 2 // RING_FLAG_E2E: end-to-end flow control
	RingNoInterrupt RingFlag = 1 << 3 // RING_FLAG_NO_INTERRUPT: busy polling
)

// pollInterval is how often a wait looks at a TX ring that has nothing in
// flight that will interrupt (see txFlagsLocked).
const pollInterval = time.Millisecond

// MaxThrottlingNs is the largest interrupt throttling interval (16 bits of
// 256 ns units).
const MaxThrottlingNs = IntThrottlingIntervalMax * IntThrottlingUnitNs

// RingConfig describes a ring to allocate.
type RingConfig struct {
	Hop   int // ring index; -1 allocates the first free from RingFirstUsableHop
	Size  int // descriptors, MinRingSize..MaxRingSize; Size-1 frames fit in flight
	Flags RingFlag
	// RX only: the local TX ring whose path carries this ring's E2E
	// credits back (RingE2E), and the PDF masks of frame mode.
	E2ETxHop         int
	SOFMask, EOFMask uint16
	// Notify, if set, runs whenever completions were reaped or the ring
	// stopped, once the ring's lock is released: on the interrupt
	// goroutine, or on the goroutine of any call that reaped (TxFree,
	// RxReady, TxSlot, ...), so that no completion goes unannounced. It
	// must not block.
	Notify func()
}

// Frame is a received frame, in place in its RX slot.
type Frame struct {
	Data     []byte // the slot, cut to the received length
	SOF, EOF uint8  // PDFs the NHI saw
	Flags    uint32 // DescFlagCRCError, DescFlagBufferOverrun
}

// RingStats are a ring's counters since allocation.
type RingStats struct {
	Posted, Completed, Canceled uint64
}

// Ring is one TX or RX ring with its zero-copy buffers. An RX ring has one
// contiguous DMA buffer of Size × 4 KiB, descriptor i always using slot i.
// A TX ring's descriptors carry buffers of any TxPool: its own pool of
// Size buffers, or a pool its user lends from (see TxPool); each
// descriptor remembers its buffer and gives it back when it completes or
// the ring stops. The data path works in batches: TX callers reserve
// buffers (TxReserve from the ring's own pool, TxPool.Reserve from
// another), fill them in place and post what they filled with one
// doorbell (TxCommit); RX callers gather completed frames in place,
// adjacent slots merged into one slice (RxGather), and hand the slots back
// with one doorbell (RxRelease).
//
// A Ring is safe for concurrent use, but frames are ordered: one producer
// (TX) or one consumer (RX) at a time is the intended use.
type Ring struct {
	nhi              *NHI
	hop              int
	rx               bool
	size             int
	cfg              RingConfig
	descMem, slotMem Memory // a TX ring's slotMem is its pool's memory
	desc, slots      []byte
	slotIOVA         uint64
	// TX: the ring's own buffers (TxReserve); txBufs[i] is the buffer
	// descriptor i carries while it is posted (under mu), putScratch the
	// reap's list of buffers to give back.
	pool       *TxPool
	txBufs     []txRef
	putScratch []int32
	vector     int  // under NHI.mu; -1 without interrupts
	ownVector  bool // throttling applies only to an unshared vector

	// db serializes the doorbell writes of posting (TxCommit, RxRelease),
	// which happen after mu is released: the emulated NHI may run its DMA
	// on the doorbell write, and completions must be reaped meanwhile.
	// Taking db first and reading head under mu keeps doorbells in order.
	// Acquire before NHI.mu and mu.
	db sync.Mutex

	// mu protects the fields below. Acquire after NHI.mu.
	mu         sync.Mutex
	running    bool
	freed      bool
	head       int           // next descriptor to post
	tail       int           // next descriptor to complete
	cons       int           // RX: next completed frame to hand out
	consSeq    uint64        // RX: frames released since Start (the sequence number of cons)
	throttleNs uint32        // applied at Start
	waitCh     chan struct{} // closed on progress; nil when nobody waits
	irqHead    int           // TX: 1 + the index of the last descriptor posted with an interrupt, 0 none
	notify     bool          // Notify is due at unlock
	stats      RingStats
}

// txRef is the buffer a posted TX descriptor carries.
type txRef struct {
	pool *TxPool
	idx  int32
}

// Hop returns the ring index (the NHI adapter HopID of its path).
func (r *Ring) Hop() int { return r.hop }

// Size returns the number of descriptors.
func (r *Ring) Size() int { return r.size }

// IsRx reports whether r is an RX ring.
func (r *Ring) IsRx() bool { return r.rx }

// slot returns the 4 KiB buffer of RX slot i.
func (r *Ring) slot(i int) []byte { return r.slots[i*SlotSize : (i+1)*SlotSize : (i+1)*SlotSize] }

func (r *Ring) name() string {
	if r.rx {
		return fmt.Sprintf("rx ring %d", r.hop)
	}
	return fmt.Sprintf("tx ring %d", r.hop)
}

// descFlags are the flags the driver sets when posting an RX descriptor
// or a raw TX one.
func (r *Ring) descFlags() uint32 {
	if r.cfg.Flags&RingNoInterrupt != 0 {
		return DescFlagPosted
	}
	return DescFlagPosted | DescFlagInterrupt
}

// txFlagsLocked are the flags of a frame-mode TX descriptor posted with
// inFlight descriptors in flight, itself included. Its completion
// interrupts only while the ring is more than half full: then a writer may
// wait for space, and the descriptors of the upper half wake it as they
// complete; below, a writer finds space without waiting, and an interrupt
// per frame would only wake the interrupt goroutine for nothing (a wake-up
// per message on a latency-bound stream). Waits that need completions
// below half full (Flush) poll (see wait).
func (r *Ring) txFlagsLocked(inFlight int) uint32 {
	if r.cfg.Flags&RingNoInterrupt != 0 || inFlight <= (r.size-1)/2 {
		if r.irqHead == r.head+1 {
			r.irqHead = 0 // the flagged descriptor there is long done
		}
		return DescFlagPosted
	}
	r.irqHead = r.head + 1
	return DescFlagPosted | DescFlagInterrupt
}

// interruptPendingLocked reports whether a descriptor in flight will
// interrupt when it completes.
func (r *Ring) interruptPendingLocked() bool {
	if r.rx || r.cfg.Flags&RingFrame == 0 {
		return true // every descriptor interrupts
	}
	// The flagged descriptor sits at irqHead-1 (mod size) while it is
	// between tail and head.
	return r.irqHead > 0 && (r.irqHead-1-r.tail+r.size)%r.size < r.inFlightLocked()
}

// SetThrottling sets the interrupt throttling interval in ns
// (tb_ring_throttling); only while the ring is stopped.
func (r *Ring) SetThrottling(ns uint32) error {
	if ns > MaxThrottlingNs {
		return fmt.Errorf("%s: throttling %d ns above %d: %w", r.name(), ns, MaxThrottlingNs, ErrInvalid)
	}
	r.mu.Lock()
	defer r.unlock()
	if r.running {
		return fmt.Errorf("%s: throttling: %w", r.name(), ErrRingBusy)
	}
	r.throttleNs = ns
	return nil
}

// Start programs and enables the ring (tb_ring_start). An RX ring then posts
// all Size-1 slots, so it is primed before any path delivers to it.
func (r *Ring) Start() error {
	r.db.Lock()
	defer r.db.Unlock()
	if err := r.program(); err != nil {
		return err
	}
	if r.rx {
		// The doorbell goes after the locks: an emulated NHI may send the
		// credits it grants for the new slots at once.
		r.doorbell(r.size - 1)
	}
	return nil
}

// program is Start under NHI.mu and mu: registers, interrupts, and for an
// RX ring every slot but one posted.
func (r *Ring) program() error {
	n := r.nhi
	n.mu.Lock()
	defer n.mu.Unlock()
	r.mu.Lock()
	defer r.unlock()
	switch {
	case r.freed:
		return fmt.Errorf("%s: start: %w", r.name(), ErrClosed)
	case r.running:
		return fmt.Errorf("%s: start: %w", r.name(), ErrRingBusy)
	}
	dev := n.dev
	flags := RingFlagEnable
	frameSize := uint32(0)
	if r.cfg.Flags&RingFrame == 0 {
		flags |= RingFlagRaw
		frameSize = FrameSize
	}
	base := r.descMem.IOVA()
	if r.rx {
		dev.Write32(RxRingReg(r.hop, RingAddrLo), uint32(base))
		dev.Write32(RxRingReg(r.hop, RingAddrHi), uint32(base>>32))
		dev.Write32(RxRingReg(r.hop, RingSizeReg), frameSize<<RingFrameSizeShift|uint32(r.size))
		dev.Write32(RxOptionsReg(r.hop, RingOptionsPDF), uint32(r.cfg.SOFMask)<<16|uint32(r.cfg.EOFMask))
		dev.Write32(RxOptionsReg(r.hop, 0), flags)
	} else {
		dev.Write32(TxRingReg(r.hop, RingAddrLo), uint32(base))
		dev.Write32(TxRingReg(r.hop, RingAddrHi), uint32(base>>32))
		dev.Write32(TxRingReg(r.hop, RingSizeReg), uint32(r.size))
		dev.Write32(TxOptionsReg(r.hop, RingOptionsPDF), 0)
		dev.Write32(TxOptionsReg(r.hop, 0), flags)
	}
	if r.cfg.Flags&RingE2E != 0 {
		flags |= RingFlagE2EFlowControl
		if r.rx {
			flags |= uint32(r.cfg.E2ETxHop) << RxOptionsE2EHopShift & RxOptionsE2EHopMask
			dev.Write32(RxOptionsReg(r.hop, 0), flags)
		} else {
			dev.Write32(TxOptionsReg(r.hop, 0), flags)
		}
	}
	if r.cfg.Flags&RingNoInterrupt == 0 {
		n.bindVector(r)
		n.setInterrupt(r, true)
	}
	r.head, r.tail, r.cons, r.irqHead = 0, 0, 0, 0
	r.consSeq = 0
	r.running = true
	if r.rx {
		for range r.size - 1 {
			r.postRxLocked()
		}
	}
	return nil
}

// postRxLocked posts the slot at head (the doorbell is rung apart).
func (r *Ring) postRxLocked() {
	StoreDesc(r.desc, r.head, r.slotIOVA+uint64(r.head*SlotSize), ControlWord(0, 0, 0, r.descFlags()))
	r.head = (r.head + 1) % r.size
	r.stats.Posted++
}

// doorbell tells the NHI the new head: RX in the low 16 bits, TX in the
// high ones (the read-only tail half written as zero). Called with db
// held.
func (r *Ring) doorbell(head int) {
	if r.rx {
		r.nhi.dev.Write32(RxRingReg(r.hop, RingIndices), uint32(head))
	} else {
		r.nhi.dev.Write32(TxRingReg(r.hop, RingIndices), uint32(head)<<RingTxHeadShift)
	}
}

// Stop disables the ring (tb_ring_stop): interrupts off, registers zeroed,
// indices reset. Frames posted but not completed are canceled; completed RX
// frames not yet released are dropped. It returns how many were canceled.
func (r *Ring) Stop() int {
	r.db.Lock()
	defer r.db.Unlock()
	n := r.nhi
	n.mu.Lock()
	defer n.mu.Unlock()
	r.mu.Lock()
	defer r.unlock()
	if !r.running {
		return 0
	}
	if r.cfg.Flags&RingNoInterrupt == 0 {
		n.setInterrupt(r, false)
		n.unbindVector(r)
	}
	dev := n.dev
	regs, opts := TxRingReg, TxOptionsReg
	if r.rx {
		regs, opts = RxRingReg, RxOptionsReg
	}
	dev.Write32(opts(r.hop, 0), 0)
	dev.Write32(regs(r.hop, RingAddrLo), 0)
	dev.Write32(regs(r.hop, RingAddrHi), 0)
	dev.Write32(regs(r.hop, RingIndices), 0)
	dev.Write32(regs(r.hop, RingSizeReg), 0)
	r.reapLocked() // completions that raced with the stop still count
	canceled := (r.head - r.tail + r.size) % r.size
	r.stats.Canceled += uint64(canceled)
	if !r.rx {
		r.putTxBufsLocked(r.tail, canceled)
	}
	r.head, r.tail, r.cons = 0, 0, 0
	r.running = false
	r.wakeLocked()
	r.notify = true
	return canceled
}

// Free stops the ring and releases its memory and index (tb_ring_free).
func (r *Ring) Free() {
	r.Stop()
	r.mu.Lock()
	if r.freed {
		r.unlock()
		return
	}
	r.freed = true
	r.unlock()
	r.nhi.releaseRing(r)
	if r.rx {
		r.slotMem.Free()
	} else {
		r.pool.Close() // its memory goes once every buffer is back
	}
	r.descMem.Free()
}

// Running reports whether the ring is started.
func (r *Ring) Running() bool {
	r.mu.Lock()
	defer r.unlock()
	return r.running
}

// Stats returns the ring's counters.
func (r *Ring) Stats() RingStats {
	r.mu.Lock()
	defer r.unlock()
	return r.stats
}

// Poll reaps completions by reading descriptors; busy-poll users call it,
// interrupt mode does it on the vector goroutine.
func (r *Ring) Poll() { r.reap() }

func (r *Ring) reap() {
	r.mu.Lock()
	r.reapLocked()
	r.unlock()
}

// reapLocked advances tail over descriptors the NHI marked COMPLETED
// (completion is read from the descriptor, never from the tail register).
// Whoever reaps wakes the waiters and owes Notify: a caller that only
// looked (TxFree, RxReady) takes completions the interrupt goroutine will
// then not find, and a waiter told by nobody would sleep for good.
func (r *Ring) reapLocked() int {
	if !r.running {
		return 0
	}
	n, from := 0, r.tail
	for r.tail != r.head && LoadDescControl(r.desc, r.tail)&DescFlagCompleted != 0 {
		r.tail = (r.tail + 1) % r.size
		n++
	}
	if n > 0 && !r.rx {
		r.putTxBufsLocked(from, n)
	}
	if n > 0 {
		r.stats.Completed += uint64(n)
		r.wakeLocked()
		r.notify = true
	}
	return n
}

// putTxBufsLocked gives the buffers of the n TX descriptors from
// descriptor from on back to their pools, one call per run of one pool.
func (r *Ring) putTxBufsLocked(from, n int) {
	var pool *TxPool
	put := r.putScratch[:0]
	for i := range n {
		d := (from + i) % r.size
		ref := r.txBufs[d]
		r.txBufs[d] = txRef{}
		if ref.pool != pool && len(put) > 0 {
			pool.put(put)
			put = put[:0]
		}
		pool = ref.pool
		put = append(put, ref.idx)
	}
	if len(put) > 0 {
		pool.put(put)
	}
	r.putScratch = put[:0]
}

// unlock releases mu and then runs the Notify that reaping or stopping
// left due.
func (r *Ring) unlock() {
	notify := r.notify && r.cfg.Notify != nil
	r.notify = false
	r.mu.Unlock()
	if notify {
		r.cfg.Notify()
	}
}

func (r *Ring) wakeLocked() {
	if r.waitCh != nil {
		close(r.waitCh)
		r.waitCh = nil
	}
}

// wait blocks until cond (evaluated under r.mu after reaping) holds, the
// ring stops, or ctx ends. Busy-poll rings spin instead of sleeping.
func (r *Ring) wait(ctx context.Context, cond func() bool) error {
	for {
		r.mu.Lock()
		if !r.running {
			r.unlock()
			return fmt.Errorf("%s: %w", r.name(), ErrShutdown)
		}
		r.reapLocked()
		if cond() {
			r.unlock()
			return nil
		}
		if r.cfg.Flags&RingNoInterrupt != 0 {
			r.unlock()
			if err := ctx.Err(); err != nil {
				return err
			}
			runtime.Gosched()
			continue
		}
		if !r.interruptPendingLocked() {
			// Nothing in flight will interrupt (a TX ring below half
			// full): look again shortly.
			r.unlock()
			select {
			case <-time.After(pollInterval):
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if r.waitCh == nil {
			r.waitCh = make(chan struct{})
		}
		ch := r.waitCh
		r.unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// inFlightLocked is the number of posted, not completed descriptors.
func (r *Ring) inFlightLocked() int { return (r.head - r.tail + r.size) % r.size }

// Flush waits until no posted frame is outstanding (tb_ring_flush). An RX
// ring keeps its slots posted, so flushing it waits for ctx's deadline.
func (r *Ring) Flush(ctx context.Context) error {
	err := r.wait(ctx, func() bool { return r.inFlightLocked() == 0 })
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: %w: %w", r.name(), ErrFlushTimeout, err)
	}
	return err
}

// ---- TX ----

// TxFree returns the number of free TX slots.
func (r *Ring) TxFree() int {
	r.mu.Lock()
	defer r.unlock()
	if !r.running {
		return 0
	}
	r.reapLocked()
	return r.size - 1 - r.inFlightLocked()
}

func (r *Ring) txReadyLocked() error {
	if !r.running {
		return fmt.Errorf("%s: %w", r.name(), ErrShutdown)
	}
	if r.inFlightLocked() == r.size-1 {
		r.reapLocked()
		if r.inFlightLocked() == r.size-1 {
			return ErrRingFull
		}
	}
	return nil
}

// TxReserve reserves into b buffers of the ring's own pool, as many as
// the ring has free descriptors and at most maxFrames, oldest first (so
// mostly contiguous: b.Runs merges adjacent buffers). Fill them front to
// back and post what was filled with TxCommit; nothing is posted before.
// ErrRingFull when no descriptor is free. b must be empty or hold buffers
// of the ring's pool.
func (r *Ring) TxReserve(b *TxBuffers, maxFrames int) error {
	if r.rx || maxFrames < 1 {
		return fmt.Errorf("%s: reserve %d frames: %w", r.name(), maxFrames, ErrInvalid)
	}
	r.mu.Lock()
	defer r.unlock()
	if err := r.txReadyLocked(); err != nil {
		return err
	}
	// The pool has Size buffers and at most Size-1 are posted: one is
	// free for every free descriptor unless another reservation holds it.
	if r.pool.Reserve(b, min(r.size-1-r.inFlightLocked(), maxFrames)) == 0 {
		return fmt.Errorf("%s: reserve: %w", r.name(), ErrRingFull)
	}
	return nil
}

// TxCommit posts the first n bytes of b's buffers, filled front to back:
// in frame mode as ⌈n/4096⌉ frames (full ones, then the tail), as many of
// them as the ring has free descriptors (then n is cut to the full frames
// that fit: a short post); on a raw ring as one frame of at most 256
// bytes. Every frame carries the PDFs sof and eof, one doorbell announces
// them all, and the posted buffers leave b: each goes back to its pool
// when its descriptor completes or the ring stops. It returns the bytes
// posted; ErrRingFull when no descriptor is free.
func (r *Ring) TxCommit(b *TxBuffers, n int, sof, eof uint8) (int, error) {
	frames, max := (n+SlotSize-1)/SlotSize, MaxFrameSize
	if r.cfg.Flags&RingFrame == 0 {
		frames, max = 1, FrameSize
	}
	if r.rx || n < 1 || (frames == 1 && n > max) || frames > b.Len() {
		return 0, fmt.Errorf("%s: post %d bytes of %d buffers: %w", r.name(), n, b.Len(), ErrInvalid)
	}
	r.db.Lock()
	defer r.db.Unlock()
	r.mu.Lock()
	if !r.running {
		r.unlock()
		return 0, fmt.Errorf("%s: %w", r.name(), ErrShutdown)
	}
	r.reapLocked()
	if free := r.size - 1 - r.inFlightLocked(); frames > free {
		if free == 0 || r.cfg.Flags&RingFrame == 0 {
			r.unlock()
			return 0, fmt.Errorf("%s: post %d frames: %w", r.name(), frames, ErrRingFull)
		}
		frames, n = free, free*SlotSize
	}
	pool := b.pool
	for i, left := 0, n; i < frames; i, left = i+1, left-SlotSize {
		size, flags := min(left, SlotSize), r.descFlags()
		if r.cfg.Flags&RingFrame != 0 {
			flags = r.txFlagsLocked(r.inFlightLocked() + 1)
		}
		idx := b.idx[i]
		r.txBufs[r.head] = txRef{pool: pool, idx: idx}
		StoreDesc(r.desc, r.head, pool.iova+uint64(idx)*SlotSize, ControlWord(size, sof, eof, flags))
		r.head = (r.head + 1) % r.size
		r.stats.Posted++
	}
	head := r.head
	r.unlock()
	b.drop(frames)
	r.doorbell(head)
	return n, nil
}

// WaitTx blocks until a TX slot is free.
func (r *Ring) WaitTx(ctx context.Context) error {
	return r.wait(ctx, func() bool { return r.inFlightLocked() < r.size-1 })
}

// Write copies p into TX slots with the given PDFs, waiting for free slots
// as it goes (in frame mode ⌈len(p)/4096⌉ frames; a raw ring takes one
// frame of at most 256 bytes). It returns the bytes posted; on error some
// may have been posted.
func (r *Ring) Write(ctx context.Context, p []byte, sof, eof uint8) (int, error) {
	if r.cfg.Flags&RingFrame == 0 && len(p) > FrameSize {
		return 0, fmt.Errorf("%s: write %d bytes: %w", r.name(), len(p), ErrInvalid)
	}
	var b TxBuffers
	defer b.Release()
	done := 0
	for done < len(p) {
		err := r.TxReserve(&b, (len(p)-done+SlotSize-1)/SlotSize)
		if errors.Is(err, ErrRingFull) {
			if err = r.WaitTx(ctx); err == nil {
				continue
			}
		}
		if err != nil {
			return done, err
		}
		n := 0
		for _, run := range b.Runs() {
			n += copy(run, p[done+n:])
		}
		posted, err := r.TxCommit(&b, n, sof, eof)
		done += posted
		if err != nil && !errors.Is(err, ErrRingFull) {
			return done, err
		}
		b.Release() // what did not fit is filled again from p
	}
	return done, nil
}

// ---- RX ----

// RxReady returns how many completed frames wait to be read.
func (r *Ring) RxReady() int {
	r.mu.Lock()
	defer r.unlock()
	r.reapLocked()
	return (r.tail - r.cons + r.size) % r.size
}

// RxFrames appends every completed, unreleased frame to dst, oldest
// first, in place in its slot (valid until released).
func (r *Ring) RxFrames(dst []Frame) []Frame {
	r.mu.Lock()
	defer r.unlock()
	if !r.running {
		return dst
	}
	r.reapLocked()
	for idx := r.cons; idx != r.tail; idx = (idx + 1) % r.size {
		dst = append(dst, r.frameLocked(idx))
	}
	return dst
}

func (r *Ring) frameLocked(idx int) Frame {
	w := LoadDescControl(r.desc, idx)
	size := ControlSize(w)
	return Frame{
		Data:  r.slot(idx)[:size:size],
		SOF:   ControlSOF(w),
		EOF:   ControlEOF(w),
		Flags: w & (DescFlagCRCError | DescFlagBufferOverrun),
	}
}

// RxGathered is what RxGather found.
type RxGathered struct {
	// Runs hold the data in place in the slots, oldest first; the data of
	// adjacent slots shares one run when the earlier frame is full.
	Runs  [][]byte
	Bytes int
	// Frames were taken whole: release them (RxRelease) when the data is
	// used. Offset bytes were taken of the frame after them, which stays.
	Frames, Offset int
	// Flagged counts the frames taken that the NHI flagged
	// (DescFlagCRCError, DescFlagBufferOverrun); their data is in Runs.
	Flagged int
	// Stopped: the next frame has an EOF PDF in stopEOF; it was not taken.
	Stopped bool
}

// RxGather collects up to max bytes of the completed frames in place,
// oldest first, starting offset bytes into the oldest (what an earlier
// gather took of it), in at most maxRuns runs (0: any number). It stops at
// a frame whose EOF PDF is a bit of stopEOF, at max bytes or when another
// run would exceed maxRuns. Nothing is released.
func (r *Ring) RxGather(dst [][]byte, offset, max, maxRuns int, stopEOF uint16) RxGathered {
	g := RxGathered{Runs: dst}
	r.mu.Lock()
	defer r.unlock()
	if !r.running {
		return g
	}
	r.reapLocked()
	runStart, runEnd := -1, -1 // byte offsets in slots of the last run
	for idx := r.cons; idx != r.tail && g.Bytes < max; idx = (idx + 1) % r.size {
		w := LoadDescControl(r.desc, idx)
		if stopEOF>>(ControlEOF(w)&0xf)&1 != 0 {
			g.Stopped = true
			break
		}
		size, off := ControlSize(w), 0
		if idx == r.cons {
			off = offset
		}
		take := min(size-off, max-g.Bytes)
		start := idx*SlotSize + off
		switch {
		case start == runEnd:
			runEnd += take
			g.Runs[len(g.Runs)-1] = r.slots[runStart:runEnd:runEnd]
		case maxRuns > 0 && len(g.Runs)-len(dst) == maxRuns:
			return g
		default:
			runStart, runEnd = start, start+take
			g.Runs = append(g.Runs, r.slots[runStart:runEnd:runEnd])
		}
		g.Bytes += take
		if w&(DescFlagCRCError|DescFlagBufferOverrun) != 0 {
			g.Flagged++
		}
		if off+take < size {
			g.Offset = off + take
			break
		}
		g.Frames++
		if size < SlotSize {
			runEnd = -1 // the next slot's data does not follow this one's
		}
	}
	return g
}

// RxFind looks for a frame whose EOF PDF is a bit of eofMask among the
// completed, unreleased frames, from the one with sequence number from on
// (frames are numbered in order of arrival from 0 at Start; the oldest
// unreleased one is RxSeq's). It returns the first such frame's number,
// or found false and end, the number of the next frame to complete: the
// frames before end hold none, so a later search may start there. It only
// reads descriptors (after reaping), so it is cheap to run on every
// completion.
func (r *Ring) RxFind(from uint64, eofMask uint16) (at uint64, found bool, end uint64) {
	r.mu.Lock()
	defer r.unlock()
	if !r.running {
		return 0, false, from
	}
	r.reapLocked()
	ready := uint64((r.tail - r.cons + r.size) % r.size)
	end = r.consSeq + ready
	for seq := max(from, r.consSeq); seq < end; seq++ {
		idx := (r.cons + int(seq-r.consSeq)) % r.size
		if eofMask>>(ControlEOF(LoadDescControl(r.desc, idx))&0xf)&1 != 0 {
			return seq, true, end
		}
	}
	return 0, false, end
}

// RxSeq returns the sequence number of the oldest completed, unreleased
// frame (every frame before it was released), see RxFind.
func (r *Ring) RxSeq() uint64 {
	r.mu.Lock()
	defer r.unlock()
	return r.consSeq
}

// RxRelease gives the n oldest completed frames back to the NHI, re-posting
// their slots with one doorbell.
func (r *Ring) RxRelease(n int) error {
	r.db.Lock()
	defer r.db.Unlock()
	r.mu.Lock()
	if !r.running {
		r.unlock()
		return fmt.Errorf("%s: %w", r.name(), ErrShutdown)
	}
	if n < 0 || n > (r.tail-r.cons+r.size)%r.size {
		r.unlock()
		return fmt.Errorf("%s: release %d frames: %w", r.name(), n, ErrInvalid)
	}
	for range n {
		r.cons = (r.cons + 1) % r.size
		r.postRxLocked()
	}
	r.consSeq += uint64(n)
	head := r.head
	r.unlock()
	if n > 0 {
		r.doorbell(head)
	}
	return nil
}
