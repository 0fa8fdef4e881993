package emu

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"tbstream/nhi"
)

// Defaults of a host.
const (
	DefaultRings   = 12 // Intel NHIs: 12 ring pairs
	DefaultVectors = 16 // MSIX_MAX_VECS
	capsVersion    = nhi.CapsVersion2
)

// Config describes an emulated host.
type Config struct {
	Name    string       // for logs
	Rings   int          // ring pairs (CAPS hop count); 0 means DefaultRings
	Vectors int          // MSI-X vectors; 0 means DefaultVectors
	UID     uint64       // router UID (ROUTER_CS_7..8); 0 picks a random one
	Logger  *slog.Logger // nil: slog.Default()
	// CableKey is the shared key socket cables prove in their handshake
	// (see LoadCableKey); nil: none, and a peer that has one is refused.
	CableKey []byte
	// SharedMemory offers peers on unix sockets to carry the cable's
	// frames through shared memory (see Dial); it is used when both ends
	// offer it.
	SharedMemory bool
}

// Host is an emulated NHI plus its host router. It implements nhi.Device.
type Host struct {
	name     string
	log      *slog.Logger
	hopCount int
	uid      uint64
	mem      *memoryMap
	irq      *interrupts
	// irqPending holds RX interrupts of delivered frames until flushIRQ
	// (by ring interrupt index).
	irqPending []atomic.Uint32
	tx, rx     []*ring
	router     *router
	lanes      [laneAdapters]*lane
	counters   counters
	cableKey   []byte // nil: socket cables without a key
	// sharedMemory: Config.SharedMemory; shmFailed: a shared-memory
	// cable could not be set up here, so no more are offered.
	sharedMemory bool
	shmFailed    atomic.Bool
	refusals     refusalLog // refused cable connections, for the log
	seenNonces   nonceSet   // of tagged hellos accepted, against replays

	wake chan struct{} // DMA engine doorbell, coalescing
	idle atomic.Bool   // the engine is about to sleep or sleeping
	// replayPlug: RX ring 0 was enabled; plug events for cables already
	// plugged are due once it has descriptors.
	replayPlug atomic.Bool
	done       chan struct{}
	engineWG   sync.WaitGroup
	closeOnce  sync.Once

	// regMu protects misc, the registers with no emulated behaviour
	// (mailbox, firmware status, DMA_MISC).
	regMu sync.Mutex
	misc  map[nhi.Reg]uint32
}

// NewHost creates a host with nothing plugged in and starts its DMA engine.
func NewHost(cfg Config) (*Host, error) {
	if cfg.Rings == 0 {
		cfg.Rings = DefaultRings
	}
	if cfg.Vectors == 0 {
		cfg.Vectors = DefaultVectors
	}
	if cfg.Rings < 1 || cfg.Rings > nhiAdapterMaxHop+1 {
		return nil, fmt.Errorf("emu host: %d rings outside 1..%d", cfg.Rings, nhiAdapterMaxHop+1)
	}
	if cfg.Vectors < 1 || cfg.Vectors > nhi.MaxVectors {
		return nil, fmt.Errorf("emu host: %d vectors outside 1..%d", cfg.Vectors, nhi.MaxVectors)
	}
	if err := checkCableKey(cfg.CableKey); err != nil {
		return nil, fmt.Errorf("emu host: cable key: %w", err)
	}
	if cfg.UID == 0 {
		var b [8]byte
		rand.Read(b[:])
		cfg.UID = binary.LittleEndian.Uint64(b[:]) | 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Name != "" {
		log = log.With("host", cfg.Name)
	}
	h := &Host{
		name: cfg.Name, log: log, hopCount: cfg.Rings, uid: cfg.UID,
		cableKey:     bytes.Clone(cfg.CableKey),
		sharedMemory: cfg.SharedMemory,
		mem:          newMemoryMap(),
		irq:          newInterrupts(cfg.Rings, cfg.Vectors),
		irqPending:   make([]atomic.Uint32, nhi.InterruptRegCount(cfg.Rings)),
		wake:         make(chan struct{}, 1), done: make(chan struct{}),
		misc: map[nhi.Reg]uint32{},
	}
	for i := range cfg.Rings {
		h.tx = append(h.tx, &ring{hop: i})
		h.rx = append(h.rx, &ring{hop: i, rx: true})
	}
	for i := range h.lanes {
		h.lanes[i] = &lane{adapter: uint8(firstLaneAdapter + i)}
	}
	h.router = newRouter(h)
	h.engineWG.Add(1)
	go h.engine()
	return h, nil
}

// Name returns the host's name.
func (h *Host) Name() string { return h.name }

// UID returns the router UID, as ROUTER_CS_7..8 hold it.
func (h *Host) UID() uint64 { return h.uid }

// Close stops the DMA engine and unplugs every cable.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		for _, l := range h.lanes {
			if c := l.cable.Load(); c != nil {
				c.Close()
			}
		}
		close(h.done)
		h.engineWG.Wait()
	})
	return nil
}

// AllocDMA implements nhi.Device.
func (h *Host) AllocDMA(size int) (nhi.Memory, error) { return h.mem.alloc(size) }

// Vectors implements nhi.Device.
func (h *Host) Vectors() []<-chan struct{} {
	out := make([]<-chan struct{}, len(h.irq.vectors))
	for i, v := range h.irq.vectors {
		out[i] = v.c
	}
	return out
}

// SetVectorHandler makes vector i run handler on the goroutine that
// raises it (a cable's reader, the DMA engine, a doorbell's writer)
// instead of signalling its channel; nil goes back to the channel. emu
// raises interrupts holding none of its locks (nhi.InlineDevice).
func (h *Host) SetVectorHandler(i int, handler func()) {
	if i < 0 || i >= len(h.irq.vectors) {
		return
	}
	if handler == nil {
		h.irq.vectors[i].handler.Store(nil)
		return
	}
	h.irq.vectors[i].handler.Store(&handler)
}

func (h *Host) kick() {
	if !h.idle.Load() {
		return
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// ringAt decodes a ring register offset into ring and field.
func (h *Host) ringAt(off, base nhi.Reg, stride nhi.Reg, rings []*ring) (*ring, nhi.Reg) {
	if off < base || off >= base+stride*nhi.Reg(len(rings)) {
		return nil, 0
	}
	i := (off - base) / stride
	return rings[i], (off - base) % stride
}

// Read32 implements nhi.Device.
func (h *Host) Read32(off nhi.Reg) uint32 {
	if off%4 != 0 {
		return 0xffffffff
	}
	if r, f := h.ringAt(off, nhi.RegTxRingBase, nhi.RingBlockSize, h.tx); r != nil {
		return r.readBlock(f)
	}
	if r, f := h.ringAt(off, nhi.RegRxRingBase, nhi.RingBlockSize, h.rx); r != nil {
		return r.readBlock(f)
	}
	if r, f := h.ringAt(off, nhi.RegTxOptionsBase, nhi.RingOptionsSize, h.tx); r != nil {
		return r.readOptions(f)
	}
	if r, f := h.ringAt(off, nhi.RegRxOptionsBase, nhi.RingOptionsSize, h.rx); r != nil {
		return r.readOptions(f)
	}
	switch {
	case off >= nhi.RegRingNotifyBase && off < nhi.RegRingNotifyBase+nhi.Reg(4*len(h.irq.notify)):
		return h.irq.notify[(off-nhi.RegRingNotifyBase)/4].Swap(0) // clear on read
	case off >= nhi.RegRingInterruptBase && off < nhi.RegRingInterruptBase+nhi.Reg(4*len(h.irq.enable)):
		return h.irq.enable[(off-nhi.RegRingInterruptBase)/4].Load()
	case off >= nhi.RegIntVecAlloc && off < nhi.RegIntVecAlloc+nhi.Reg(4*len(h.irq.ivr)):
		return h.irq.ivr[(off-nhi.RegIntVecAlloc)/4].Load()
	case off >= nhi.RegIntThrottlingRate && off < nhi.RegIntThrottlingRate+nhi.Reg(4*len(h.irq.vectors)):
		return uint32(h.irq.vectors[(off-nhi.RegIntThrottlingRate)/4].interval.Load() / nhi.IntThrottlingUnitNs)
	case off == nhi.RegCaps:
		return capsVersion<<nhi.CapsVersionShift | uint32(h.hopCount)
	case off == nhi.RegReset:
		return 0 // the reset completes at once
	}
	h.regMu.Lock()
	defer h.regMu.Unlock()
	return h.misc[off]
}

// Write32 implements nhi.Device.
func (h *Host) Write32(off nhi.Reg, v uint32) {
	if off%4 != 0 {
		return
	}
	if r, f := h.ringAt(off, nhi.RegTxRingBase, nhi.RingBlockSize, h.tx); r != nil {
		h.writeBlock(r, f, v)
		return
	}
	if r, f := h.ringAt(off, nhi.RegRxRingBase, nhi.RingBlockSize, h.rx); r != nil {
		h.writeBlock(r, f, v)
		return
	}
	if r, f := h.ringAt(off, nhi.RegTxOptionsBase, nhi.RingOptionsSize, h.tx); r != nil {
		h.writeOptions(r, f, v)
		return
	}
	if r, f := h.ringAt(off, nhi.RegRxOptionsBase, nhi.RingOptionsSize, h.rx); r != nil {
		h.writeOptions(r, f, v)
		return
	}
	switch {
	case off == nhi.RegRingIntClear || off == nhi.RegRingInterruptMaskClearBase:
		// Status is auto-cleared on delivery in this model.
	case off >= nhi.RegRingInterruptBase && off < nhi.RegRingInterruptBase+nhi.Reg(4*len(h.irq.enable)):
		h.irq.enable[(off-nhi.RegRingInterruptBase)/4].Store(v)
	case off >= nhi.RegIntVecAlloc && off < nhi.RegIntVecAlloc+nhi.Reg(4*len(h.irq.ivr)):
		h.irq.ivr[(off-nhi.RegIntVecAlloc)/4].Store(v)
	case off >= nhi.RegIntThrottlingRate && off < nhi.RegIntThrottlingRate+nhi.Reg(4*len(h.irq.vectors)):
		h.irq.vectors[(off-nhi.RegIntThrottlingRate)/4].interval.Store(int64(v&nhi.IntThrottlingIntervalMax) * nhi.IntThrottlingUnitNs)
	case off == nhi.RegCaps:
	case off == nhi.RegReset:
		if v&nhi.ResetHRR != 0 {
			h.reset()
		}
	default:
		h.regMu.Lock()
		h.misc[off] = v
		h.regMu.Unlock()
	}
}

// reset is the host router reset: every ring disabled and cleared, every
// path entry invalidated, interrupts masked.
func (h *Host) reset() {
	for _, r := range append(append([]*ring{}, h.tx...), h.rx...) {
		h.disableRing(r)
		r.mu.Lock()
		r.base, r.count, r.frameSize, r.pdfMasks = 0, 0, 0, 0
		r.head.Store(0)
		r.mu.Unlock()
	}
	for i := range h.irq.enable {
		h.irq.enable[i].Store(0)
	}
	h.router.clearPaths()
}

// counters are the host's drop and error counters.
type counters struct {
	txNoPath, txUnplugged, rxNoPath, rxRingStopped, rxOverflow, rxPDFMismatch,
	dmaFault, ctlBadFrame, ctlDropped, cableMalformed, cableRefused, creditFrames atomic.Uint64
}

// Counters is a snapshot of a host's drop and error counters. Frames
// dropped by the fabric are counted where they are dropped: at the
// receiving router for a HopID with no path or a stopped or full ring, at
// the sending router only for non-E2E frames with nowhere to go.
type Counters struct {
	TxNoPath       uint64 // non-E2E frames on a TX ring with no path
	TxUnplugged    uint64 // non-E2E frames whose lane adapter has no cable
	RxNoPath       uint64 // frames arriving on a HopID with no RX path
	RxRingStopped  uint64 // frames for an RX ring that is not enabled
	RxOverflow     uint64 // frames arriving with no posted RX descriptor
	RxPDFMismatch  uint64 // frames whose PDFs miss the ring's SOF/EOF masks
	DMAFault       uint64 // descriptors pointing outside mapped memory
	CtlBadFrame    uint64 // control frames failing length or CRC checks
	CtlDropped     uint64 // control packets with no destination
	CableMalformed uint64 // cables closed for a malformed frame
	CableRefused   uint64 // connections a listener refused or dropped in the handshake
	CreditFrames   uint64 // E2E credit grants sent to peers (each may carry many credits)
}

// Counters returns a snapshot of the counters.
func (h *Host) Counters() Counters {
	c := &h.counters
	return Counters{
		TxNoPath: c.txNoPath.Load(), TxUnplugged: c.txUnplugged.Load(), RxNoPath: c.rxNoPath.Load(),
		RxRingStopped: c.rxRingStopped.Load(), RxOverflow: c.rxOverflow.Load(),
		RxPDFMismatch: c.rxPDFMismatch.Load(), DMAFault: c.dmaFault.Load(),
		CtlBadFrame: c.ctlBadFrame.Load(), CtlDropped: c.ctlDropped.Load(),
		CableMalformed: c.cableMalformed.Load(), CableRefused: c.cableRefused.Load(),
		CreditFrames: c.creditFrames.Load(),
	}
}

var _ nhi.InlineDevice = (*Host)(nil)
