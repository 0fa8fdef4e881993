package emu

import (
	"sync"
	"sync/atomic"
	"time"

	"tbstream/nhi"
)

// msix is one emulated MSI-X vector: a coalescing channel (like an
// eventfd's counter) with the vector's throttling interval applied, or the
// driver's handler, run on the raising goroutine (nhi.InlineDevice).
type msix struct {
	c        chan struct{}
	handler  atomic.Pointer[func()]
	interval atomic.Int64 // ns, from REG_INT_THROTTLING_RATE

	mu      sync.Mutex
	last    time.Time
	pending bool
	timer   *time.Timer // delivers a throttled interrupt; reused
}

func (v *msix) signal() {
	if h := v.handler.Load(); h != nil {
		(*h)()
		return
	}
	select {
	case v.c <- struct{}{}:
	default:
	}
}

// fire delivers the interrupt, delayed so that two deliveries are at
// least the throttling interval apart. A held interrupt goes out with the
// first completion after the interval has passed, on that completion's
// goroutine, as a moderating NHI does; the timer delivers it only when no
// completion follows (the end of a burst). So a transfer in flight does
// not wait for a timer's goroutine, and the interval is honoured to the
// nanosecond rather than to the timer's wake-up. The delivery runs with
// no lock of the vector held (the handler reaps the driver's rings).
func (v *msix) fire() {
	interval := time.Duration(v.interval.Load())
	if interval == 0 {
		v.signal()
		return
	}
	v.mu.Lock()
	now := time.Now()
	if wait := v.last.Add(interval).Sub(now); wait > 0 {
		if !v.pending {
			v.pending = true
			if v.timer == nil {
				v.timer = time.AfterFunc(wait, v.deferred)
			} else {
				v.timer.Reset(wait)
			}
		}
		v.mu.Unlock()
		return
	}
	if v.pending {
		v.pending = false // this delivery covers the held one
		v.timer.Stop()
	}
	v.last = now
	v.mu.Unlock()
	v.signal()
}

// deferred is the timer's delivery of a held interrupt.
func (v *msix) deferred() {
	v.mu.Lock()
	if !v.pending {
		v.mu.Unlock()
		return // a completion delivered it first
	}
	now := time.Now()
	if wait := v.last.Add(time.Duration(v.interval.Load())).Sub(now); wait > 0 {
		// A run of the timer that Stop came too late for, after a
		// later delivery: hold the new one for the rest of its interval.
		v.timer.Reset(wait)
		v.mu.Unlock()
		return
	}
	v.pending = false
	v.last = now
	v.mu.Unlock()
	v.signal()
}

// interrupts is the emulated interrupt block: notify status, enable bits,
// IVR and the vectors.
type interrupts struct {
	hopCount int
	notify   []atomic.Uint32 // RING_NOTIFY_BASE, clear on read
	enable   []atomic.Uint32 // RING_INTERRUPT_BASE
	ivr      []atomic.Uint32 // INT_VEC_ALLOC
	vectors  []*msix
}

func newInterrupts(hopCount, vectors int) *interrupts {
	in := &interrupts{
		hopCount: hopCount,
		notify:   make([]atomic.Uint32, nhi.NotifyRegCount(hopCount)),
		enable:   make([]atomic.Uint32, nhi.InterruptRegCount(hopCount)),
		ivr:      make([]atomic.Uint32, (2*hopCount+nhi.IntVecAllocPerReg-1)/nhi.IntVecAllocPerReg),
	}
	for range vectors {
		in.vectors = append(in.vectors, &msix{c: make(chan struct{}, 1)})
	}
	return in
}

func setBit(words []atomic.Uint32, bit int) {
	if bit/32 < len(words) {
		words[bit/32].Or(1 << (bit % 32))
	}
}

// raise records completion on ring interrupt index idx and fires its
// vector when the ring's interrupt is enabled.
func (in *interrupts) raise(idx int) {
	setBit(in.notify, idx)
	if in.enable[idx/32].Load()&(1<<(idx%32)) == 0 {
		return
	}
	reg, shift := nhi.IVRReg(idx)
	v := int(in.ivr[(reg-nhi.RegIntVecAlloc)/4].Load() >> shift & nhi.IntVecAllocMask)
	if v < len(in.vectors) {
		in.vectors[v].fire()
	}
}

// overflow records an RX overflow of ring hop (notify bit 2·hops+hop); it
// is only status, as in hardware.
func (in *interrupts) overflow(hop int) { setBit(in.notify, 2*in.hopCount+hop) }
