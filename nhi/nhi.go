package nhi

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Ring allocation limits.
const (
	// RingFirstUsableHop is where automatic ring allocation starts; ring 0
	// is the control channel (RING_FIRST_USABLE_HOPID).
	RingFirstUsableHop = 1
	// MinRingSize and MaxRingSize bound descriptors per ring. The stream
	// service allows 32..4096; the control channel uses 10.
	MinRingSize = 2
	MaxRingSize = 4096
	// hostResetTimeout bounds the wait for REG_RESET.HRR to clear.
	hostResetTimeout = 500 * time.Millisecond
)

// Errors of ring allocation and use.
var (
	ErrRingBusy     = errors.New("nhi: ring in use")          // EBUSY
	ErrNoRing       = errors.New("nhi: no free ring")         // ENOSPC
	ErrShutdown     = errors.New("nhi: ring stopped")         // ESHUTDOWN
	ErrRingFull     = errors.New("nhi: no free slot")         // ENOBUFS / EAGAIN
	ErrInvalid      = errors.New("nhi: invalid ring request") // EINVAL
	ErrFlushTimeout = errors.New("nhi: flush timed out")
)

// NHI is the driver of one native host interface: it owns the Device, the
// ring tables and the interrupt vectors.
type NHI struct {
	dev      Device
	log      *slog.Logger
	hopCount int
	vectors  []*vector
	done     chan struct{}
	wg       sync.WaitGroup

	// mu protects the ring tables and the read-modify-write interrupt
	// registers (IVR, enable bits). Acquire before any Ring.mu.
	mu     sync.Mutex
	tx, rx []*Ring
	closed bool
}

// vector is one MSI-X vector and the rings it serves.
type vector struct {
	index int
	c     <-chan struct{}
	rings atomic.Pointer[[]*Ring] // copy-on-write, updated under NHI.mu
}

// Options tune Probe.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
}

// Probe takes ownership of dev: it reads the ring count from CAPS, resets
// the host router on v2 hardware, selects auto-clear interrupts, masks every
// ring interrupt and starts one goroutine per interrupt vector (an
// InlineDevice runs the handlers itself instead).
func Probe(dev Device, opts Options) (*NHI, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	caps := dev.Read32(RegCaps)
	hops := int(caps & CapsHopCountMask)
	if hops == 0 || caps == 0xffffffff {
		return nil, fmt.Errorf("nhi probe: CAPS %#08x: no rings", caps)
	}
	if (caps&CapsVersionMask)>>CapsVersionShift >= CapsVersion2 {
		if err := resetHostRouter(dev); err != nil {
			return nil, err
		}
	}
	n := &NHI{dev: dev, log: log, hopCount: hops, done: make(chan struct{}),
		tx: make([]*Ring, hops), rx: make([]*Ring, hops)}
	dev.Write32(RegDMAMisc, dev.Read32(RegDMAMisc)&^DMAMiscDisableAuto|DMAMiscIntAutoClear)
	for i := range InterruptRegCount(hops) {
		dev.Write32(RegRingInterruptBase+Reg(4*i), 0)
	}
	for i := range NotifyRegCount(hops) {
		dev.Read32(RegRingNotifyBase + Reg(4*i)) // clear on read
	}
	inline, _ := dev.(InlineDevice)
	for i, c := range dev.Vectors() {
		if i >= MaxVectors {
			break
		}
		v := &vector{index: i, c: c}
		v.rings.Store(&[]*Ring{})
		n.vectors = append(n.vectors, v)
		if inline != nil {
			inline.SetVectorHandler(i, func() { v.reap() })
			continue
		}
		n.wg.Add(1)
		go n.serveVector(v)
	}
	log.Debug("nhi probed", "rings", hops, "vectors", len(n.vectors))
	return n, nil
}

func resetHostRouter(dev Device) error {
	dev.Write32(RegReset, ResetHRR)
	deadline := time.Now().Add(hostResetTimeout)
	for dev.Read32(RegReset)&ResetHRR != 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("nhi probe: host router reset did not complete in %v", hostResetTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// HopCount returns the number of TX (and of RX) rings.
func (n *NHI) HopCount() int { return n.hopCount }

// Device returns the backend.
func (n *NHI) Device() Device { return n.dev }

// serveVector reaps the rings bound to v each time it fires; it is the
// interrupt handler (ring_work) of every ring on that vector.
func (n *NHI) serveVector(v *vector) {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case _, ok := <-v.c:
			if !ok {
				return
			}
		}
		v.reap()
	}
}

// reap is the interrupt handler of v's rings (ring_work): on serveVector's
// goroutine, or on the device's own for an InlineDevice.
func (v *vector) reap() {
	for _, r := range *v.rings.Load() {
		r.reap()
	}
}

// Close stops and frees every ring, stops the vector goroutines and closes
// the device.
func (n *NHI) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	var rings []*Ring
	for _, r := range append(append([]*Ring{}, n.tx...), n.rx...) {
		if r != nil {
			rings = append(rings, r)
		}
	}
	n.mu.Unlock()
	for _, r := range rings {
		r.Free()
	}
	close(n.done)
	n.wg.Wait()
	if inline, ok := n.dev.(InlineDevice); ok {
		for _, v := range n.vectors {
			inline.SetVectorHandler(v.index, nil)
		}
	}
	return n.dev.Close()
}

// AllocTxRing allocates a TX ring (tb_ring_alloc_tx).
func (n *NHI) AllocTxRing(cfg RingConfig) (*Ring, error) { return n.allocRing(cfg, false) }

// AllocRxRing allocates an RX ring (tb_ring_alloc_rx).
func (n *NHI) AllocRxRing(cfg RingConfig) (*Ring, error) { return n.allocRing(cfg, true) }

func (n *NHI) allocRing(cfg RingConfig, rx bool) (*Ring, error) {
	kind := "tx"
	if rx {
		kind = "rx"
	}
	if cfg.Size < MinRingSize || cfg.Size > MaxRingSize {
		return nil, fmt.Errorf("alloc %s ring: size %d outside %d..%d: %w", kind, cfg.Size, MinRingSize, MaxRingSize, ErrInvalid)
	}
	if cfg.Flags&RingE2E != 0 && rx && (cfg.E2ETxHop < 0 || cfg.E2ETxHop >= n.hopCount) {
		return nil, fmt.Errorf("alloc rx ring: E2E TX hop %d outside 0..%d: %w", cfg.E2ETxHop, n.hopCount-1, ErrInvalid)
	}
	r := &Ring{nhi: n, rx: rx, size: cfg.Size, cfg: cfg, vector: -1}
	var err error
	if r.descMem, err = n.dev.AllocDMA(cfg.Size * DescSize); err != nil {
		return nil, fmt.Errorf("alloc %s ring descriptors: %w", kind, err)
	}
	if r.slotMem, err = n.dev.AllocDMA(cfg.Size * SlotSize); err != nil {
		r.descMem.Free()
		return nil, fmt.Errorf("alloc %s ring slots: %w", kind, err)
	}
	r.desc = r.descMem.Bytes()
	if rx {
		r.slots, r.slotIOVA = r.slotMem.Bytes(), r.slotMem.IOVA()
	} else {
		// TX buffers are a pool: descriptors take any free one.
		r.pool, r.txBufs = newTxPool(r.slotMem, cfg.Size), make([]txRef, cfg.Size)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	table := n.tx
	if rx {
		table = n.rx
	}
	switch {
	case n.closed:
		err = ErrClosed
	case cfg.Hop >= n.hopCount:
		err = fmt.Errorf("alloc %s ring %d of %d: %w", kind, cfg.Hop, n.hopCount, ErrInvalid)
	case cfg.Hop >= 0 && table[cfg.Hop] != nil:
		err = fmt.Errorf("alloc %s ring %d: %w", kind, cfg.Hop, ErrRingBusy)
	case cfg.Hop < 0:
		r.hop = -1
		for h := RingFirstUsableHop; h < n.hopCount; h++ {
			if table[h] == nil {
				r.hop = h
				break
			}
		}
		if r.hop < 0 {
			err = fmt.Errorf("alloc %s ring: %w", kind, ErrNoRing)
		}
	default:
		r.hop = cfg.Hop
	}
	if err != nil {
		r.slotMem.Free()
		r.descMem.Free()
		return nil, err
	}
	table[r.hop] = r
	return r, nil
}

// bindVector gives r a vector: a free one if any (then throttling
// applies), else the least shared one. Called with n.mu held.
func (n *NHI) bindVector(r *Ring) {
	if len(n.vectors) == 0 {
		return
	}
	best := n.vectors[0]
	for _, v := range n.vectors {
		if len(*v.rings.Load()) < len(*best.rings.Load()) {
			best = v
		}
	}
	list := append(append([]*Ring{}, *best.rings.Load()...), r)
	best.rings.Store(&list)
	r.vector = best.index
	r.ownVector = len(list) == 1
}

// unbindVector removes r from its vector. Called with n.mu held.
func (n *NHI) unbindVector(r *Ring) {
	if r.vector < 0 {
		return
	}
	v := n.vectors[r.vector]
	var list []*Ring
	for _, o := range *v.rings.Load() {
		if o != r {
			list = append(list, o)
		}
	}
	v.rings.Store(&list)
	r.vector = -1
}

// setInterrupt programs IVR, throttling and the enable bit of r, in
// ring_interrupt_active's order: the ring's IVR field (its vector when
// activating, cleared when deactivating), the vector's throttling rate (both
// ways, as Linux 7.2+; only for a vector the ring does not share), then the
// enable bit by read-modify-write (the auto-clear mode's masking). Called
// with n.mu held.
func (n *NHI) setInterrupt(r *Ring, active bool) {
	idx := InterruptIndex(n.hopCount, r.hop, r.rx)
	if r.vector >= 0 {
		reg, shift := IVRReg(idx)
		ivr := n.dev.Read32(reg) &^ (IntVecAllocMask << shift)
		if active {
			ivr |= uint32(r.vector) << shift
		}
		n.dev.Write32(reg, ivr)
		if r.ownVector {
			n.dev.Write32(RegIntThrottlingRate+Reg(4*r.vector), throttlingUnits(r.throttleNs))
		}
	}
	reg := RegRingInterruptBase + Reg(4*(idx/32))
	old := n.dev.Read32(reg)
	bit := uint32(1) << (idx % 32)
	if active {
		n.dev.Write32(reg, old|bit)
	} else {
		n.dev.Write32(reg, old&^bit)
	}
}

// throttlingUnits converts ns to the throttling register's 256 ns units,
// rounding up as Linux's DIV_ROUND_UP(interval_nsec, 256).
func throttlingUnits(ns uint32) uint32 {
	return uint32(min((uint64(ns)+IntThrottlingUnitNs-1)/IntThrottlingUnitNs, IntThrottlingIntervalMax))
}

func (n *NHI) releaseRing(r *Ring) {
	n.mu.Lock()
	defer n.mu.Unlock()
	table := n.tx
	if r.rx {
		table = n.rx
	}
	if table[r.hop] == r {
		table[r.hop] = nil
	}
}
