package xdomain_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
	"tbstream/xdomain"
)

// The register-write sequences Linux uses to start and stop a ring
// (nhi.c: tb_ring_start, ring_interrupt_active, tb_ring_stop; 7.2's
// per-ring throttling) and to enable and disable a DMA path (tunnel.c:
// tb_tunnel_alloc_dma with tb_dma_init_rx_path/tx_path, tb_tunnel_activate;
// path.c: tb_path_activate, __tb_path_deactivate_hop), written down as
// tables, and a test that records what our driver does against the
// emulated NHI and router and compares it with them, access by access and
// in order. Where we differ on purpose, the row says so and why.
//
// Conditions of the tables: MSI-X with a vector of the ring's own
// (throttling applies), the Intel auto-clear interrupt mode
// (QUIRK_AUTO_CLEAR_INT: masking by read-modify-write of the enable
// register), rings in frame mode with E2E flow control as USB4STREAM
// allocates them, a single-hop DMA path in the host router.
//
// Steps outside the tables, on purpose:
//   - REG_DMA_MISC: Linux reads it in every ring_interrupt_active and
//     writes the auto-clear bit only when it is not set yet (so once, at
//     the first ring); we write it once at probe. The same value is in
//     place before any ring interrupt is enabled.
//   - Topology reads (ROUTER_CS_1, ADP_CS_0..5 of the adapters, the lane
//     adapter's HopID 0 control path entry for its credits): Linux reads
//     them once at enumeration (tb_switch_configure, tb_init_port) and
//     keeps them; we keep no topology and read them at each enable. They
//     are reads of static registers and are filtered out below.
//   - Stream start order: Linux's tbstream_dev_start enables the paths,
//     then starts TX and RX and posts the RX buffers; we start both rings
//     and prime RX before the paths are enabled, so that no frame can
//     arrive at an RX ring without buffers (cmd/internal/stream, the
//     README's "Start order"). Stop order is Linux's: rings stopped, then
//     paths disabled, then rings freed. cmd/internal/host's
//     TestStreamStartAndStopOrder records that order for a stream's first
//     open and last close.

// access is one recorded register or config-space access.
type access struct {
	kind    string // "W" BAR0 write, "cfgR"/"cfgW" path config space read/write
	adapter uint8
	off     uint32 // BAR0 byte offset, or dword offset in the path space
	data    []uint32
}

func (a access) String() string {
	if a.kind == "W" {
		return fmt.Sprintf("W %#06x = %#08x", a.off, a.data[0])
	}
	return fmt.Sprintf("%s adapter %d path dword %d %#08x", a.kind, a.adapter, a.off, a.data)
}

// seqEnv is what the expected values depend on.
type seqEnv struct {
	hop, hopCount, size, vector int
	throttleUnits               uint32
	e2eHop                      int
	sof, eof                    uint16
	// DMA paths
	lane, nhiAdp              uint8
	rxPath, rxRing            int
	txPath, txRing, rxCredits int
}

func (e seqEnv) idx(rx bool) int { return nhi.InterruptIndex(e.hopCount, e.hop, rx) }

// step is one row of a table.
type step struct {
	what    string // register, as nhi_regs.h / tb_regs.h name it
	kind    string // as access.kind
	adapter func(seqEnv) uint8
	at      func(seqEnv) uint32
	val     func(seqEnv) []uint32 // nil: the value is not compared (a DMA address)
	mask    func(seqEnv) uint32   // bits of val[0] compared; nil: all
	linux   string                // where Linux does it
	ours    string                // "" when ours is the same; else how and why we differ
}

func reg(r func(seqEnv) nhi.Reg) func(seqEnv) uint32 {
	return func(e seqEnv) uint32 { return uint32(r(e)) }
}
func val(f func(seqEnv) uint32) func(seqEnv) []uint32 {
	return func(e seqEnv) []uint32 { return []uint32{f(e)} }
}
func fixed(v uint32) func(seqEnv) []uint32 { return val(func(seqEnv) uint32 { return v }) }

// interruptActive is ring_interrupt_active(ring, active) with 7.2's
// throttling: IVR, throttling rate, enable bit.
func interruptActive(rx, active bool) []step {
	side := "activate"
	if !active {
		side = "deactivate"
	}
	return []step{
		{what: "REG_INT_VEC_ALLOC (IVR) field of the ring", kind: "W",
			at: reg(func(e seqEnv) nhi.Reg { r, _ := nhi.IVRReg(e.idx(rx)); return r }),
			val: val(func(e seqEnv) uint32 {
				_, shift := nhi.IVRReg(e.idx(rx))
				if !active {
					return 0
				}
				return uint32(e.vector) << shift
			}),
			mask: func(e seqEnv) uint32 {
				_, shift := nhi.IVRReg(e.idx(rx))
				return nhi.IntVecAllocMask << shift // the other rings' fields share the register
			},
			linux: "ring_interrupt_active (" + side + "): ivr &= ~mask; ivr |= vector << shift if active"},
		{what: "REG_INT_THROTTLING_RATE + 4·vector", kind: "W",
			at:    reg(func(e seqEnv) nhi.Reg { return nhi.RegIntThrottlingRate + nhi.Reg(4*e.vector) }),
			val:   val(func(e seqEnv) uint32 { return e.throttleUnits }),
			linux: "ring_interrupt_active (" + side + "): DIV_ROUND_UP(interval_nsec, 256) & GENMASK(15,0)",
			ours:  "written only when the ring has a vector to itself (vectors are shared when rings outnumber them; Linux gives each ring its own)"},
		{what: "REG_RING_INTERRUPT_BASE + idx/32·4, bit idx%32", kind: "W",
			at: reg(func(e seqEnv) nhi.Reg { return nhi.RegRingInterruptBase + nhi.Reg(4*(e.idx(rx)/32)) }),
			val: val(func(e seqEnv) uint32 {
				if active {
					return 1 << (e.idx(rx) % 32)
				}
				return 0
			}),
			mask:  func(e seqEnv) uint32 { return 1 << (e.idx(rx) % 32) }, // the ring's bit; the others are other rings'
			linux: "ring_interrupt_active: old | mask (activate); nhi_mask_interrupt, auto-clear: old & ~mask (deactivate)"},
	}
}

func linuxRingStart(rx bool, e seqEnv) []step {
	ring, opts := nhi.TxRingReg, nhi.TxOptionsReg
	name := "TX"
	if rx {
		ring, opts, name = nhi.RxRingReg, nhi.RxOptionsReg, "RX"
	}
	steps := []step{
		{what: name + " ring +0: descriptor base, low", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return ring(e.hop, nhi.RingAddrLo) }),
			linux: "tb_ring_start: ring_iowrite64desc(descriptors_dma, 0)"},
		{what: name + " ring +4: descriptor base, high", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return ring(e.hop, nhi.RingAddrHi) }),
			linux: "tb_ring_start: ring_iowrite64desc, upper half"},
	}
	if rx {
		steps = append(steps,
			step{what: "RX ring +12: frame size << 16 | size", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return ring(e.hop, nhi.RingSizeReg) }),
				val: val(func(e seqEnv) uint32 { return uint32(e.size) }), linux: "tb_ring_start: frame_size 0 (4096, RING_FLAG_FRAME) << 16 | size"},
			step{what: "RX options +4: sof_mask << 16 | eof_mask", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return opts(e.hop, nhi.RingOptionsPDF) }),
				val: val(func(e seqEnv) uint32 { return uint32(e.sof)<<16 | uint32(e.eof) }), linux: "tb_ring_start"},
			step{what: "RX options +0: RING_FLAG_ENABLE", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return opts(e.hop, 0) }),
				val: fixed(nhi.RingFlagEnable), linux: "tb_ring_start: flags (frame mode: ENABLE only)"},
			step{what: "RX options +0: ENABLE | E2E_FLOW_CONTROL | e2e_tx_hop << 12", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return opts(e.hop, 0) }),
				val: val(func(e seqEnv) uint32 {
					return nhi.RingFlagEnable | nhi.RingFlagE2EFlowControl | uint32(e.e2eHop)<<nhi.RxOptionsE2EHopShift
				}), linux: "tb_ring_start: \"now that the ring valid bit is set we can configure E2E\""},
		)
	} else {
		steps = append(steps,
			step{what: "TX ring +12: size", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return ring(e.hop, nhi.RingSizeReg) }),
				val: val(func(e seqEnv) uint32 { return uint32(e.size) }), linux: "tb_ring_start"},
			step{what: "TX options +4: 0", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return opts(e.hop, nhi.RingOptionsPDF) }),
				val: fixed(0), linux: "tb_ring_start (\"time releated ?\")"},
			step{what: "TX options +0: RING_FLAG_ENABLE", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return opts(e.hop, 0) }),
				val: fixed(nhi.RingFlagEnable), linux: "tb_ring_start"},
			step{what: "TX options +0: ENABLE | E2E_FLOW_CONTROL", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return opts(e.hop, 0) }),
				val: fixed(nhi.RingFlagEnable | nhi.RingFlagE2EFlowControl), linux: "tb_ring_start: E2E after the valid bit"},
		)
	}
	steps = append(steps, interruptActive(rx, true)...)
	if rx {
		steps = append(steps, step{what: "RX ring +8: head (producer) after posting every slot but one", kind: "W",
			at:    reg(func(e seqEnv) nhi.Reg { return nhi.RxRingReg(e.hop, nhi.RingIndices) }),
			val:   val(func(e seqEnv) uint32 { return uint32(e.size - 1) }),
			linux: "tbstream_dev_alloc_rx_buffers → tb_ring_rx per buffer → ring_write_descriptors: one write per descriptor, head 1, 2, …, size-1 (the last buffer waits: the ring is full)",
			ours:  "one doorbell with the final head size-1 for the whole batch (fewer MMIO writes; the NHI sees the same descriptors)"})
	}
	return steps
}

func linuxRingStop(rx bool, e seqEnv) []step {
	ring, opts := nhi.TxRingReg, nhi.TxOptionsReg
	name := "TX"
	if rx {
		ring, opts, name = nhi.RxRingReg, nhi.RxOptionsReg, "RX"
	}
	steps := interruptActive(rx, false)
	return append(steps,
		step{what: name + " options +0: 0", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return opts(e.hop, 0) }), val: fixed(0), linux: "tb_ring_stop: ring_iowrite32options(ring, 0, 0)"},
		step{what: name + " ring +0: 0", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return ring(e.hop, nhi.RingAddrLo) }), val: fixed(0), linux: "tb_ring_stop: ring_iowrite64desc(ring, 0, 0)"},
		step{what: name + " ring +4: 0", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return ring(e.hop, nhi.RingAddrHi) }), val: fixed(0), linux: "tb_ring_stop"},
		step{what: name + " ring +8: 0 (head and tail)", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return ring(e.hop, nhi.RingIndices) }), val: fixed(0), linux: "tb_ring_stop: ring_iowrite32desc(ring, 0, 8)"},
		step{what: name + " ring +12: 0", kind: "W", at: reg(func(e seqEnv) nhi.Reg { return ring(e.hop, nhi.RingSizeReg) }), val: fixed(0), linux: "tb_ring_stop: ring_iowrite32desc(ring, 0, 12)"},
	)
}

// Path entries (struct tb_regs_hop) as tb_path_activate writes them.
func rxEntry(e seqEnv) []uint32 {
	return []uint32{
		uint32(e.rxRing) | uint32(e.nhiAdp)<<nhi.PathCS0OutAdapterShift | uint32(e.rxCredits)<<nhi.PathCS0CreditsShift | nhi.PathCS0Valid,
		1 | 5<<nhi.PathCS1PriorityShift | nhi.PathCS1IngressFC, // weight 1, priority 5, ingress FC; egress FC off (destination hop)
	}
}
func txEntry(e seqEnv) []uint32 {
	return []uint32{
		uint32(e.txPath) | uint32(e.lane)<<nhi.PathCS0OutAdapterShift | 14<<nhi.PathCS0CreditsShift | nhi.PathCS0Valid,
		1 | 5<<nhi.PathCS1PriorityShift | nhi.PathCS1IngressFC | nhi.PathCS1EgressFC,
	}
}

func rxAdapter(e seqEnv) uint8 { return e.lane }
func txAdapter(e seqEnv) uint8 { return e.nhiAdp }
func rxAt(e seqEnv) uint32     { return uint32(2 * e.rxPath) }
func txAt(e seqEnv) uint32     { return uint32(2 * e.txRing) }

// linuxPathActivate is tb_tunnel_activate of the DMA tunnel: its paths in
// the order tb_tunnel_alloc_dma made them (RX, then TX), each of one hop.
var linuxPathActivate = []step{
	{what: "DMA RX hop: read entry (lane adapter, in HopID receive_path)", kind: "cfgR", adapter: rxAdapter, at: rxAt,
		linux: "tb_path_activate → __tb_path_deactivate_hop: read, \"if it is left active deactivate it first\"",
		ours:  "the entry read also refuses a HopID routed elsewhere (EBUSY) and skips one already ours; Linux relies on its HopID allocator"},
	{what: "DMA RX hop: write entry", kind: "cfgW", adapter: rxAdapter, at: rxAt, val: rxEntry,
		linux: "tb_path_activate: next_hop receive_ring, out_port NHI, initial_credits min(tb_usable_credits, TB_DMA_CREDITS), enable; weight 1, priority 5, ingress_fc ALL&SOURCE, egress_fc (SOURCE|INTERNAL)&DESTINATION = 0"},
	{what: "DMA TX hop: read entry (NHI adapter, in HopID transmit_ring)", kind: "cfgR", adapter: txAdapter, at: txAt,
		linux: "tb_path_activate → __tb_path_deactivate_hop: read"},
	{what: "DMA TX hop: write entry", kind: "cfgW", adapter: txAdapter, at: txAt, val: txEntry,
		linux: "tb_path_activate: next_hop transmit_path, out_port lane, initial_credits TB_DMA_CREDITS, enable; ingress and egress FC (TB_PATH_ALL)",
		ours:  "14 credits without the router's buffer allocation (tb_dma_reserve_credits with credit allocation, max_dma_credits): the emulated router has none"},
}

// linuxPathDeactivate is tb_tunnel_deactivate: each path in order (RX,
// TX), each hop through __tb_path_deactivate_hop with clear_fc.
func linuxPathDeactivate() []step {
	var steps []step
	for _, p := range []struct {
		name  string
		ad    func(seqEnv) uint8
		at    func(seqEnv) uint32
		entry func(seqEnv) []uint32
	}{{"DMA RX", rxAdapter, rxAt, rxEntry}, {"DMA TX", txAdapter, txAt, txEntry}} {
		entry := p.entry
		steps = append(steps,
			step{what: p.name + " hop: read entry", kind: "cfgR", adapter: p.ad, at: p.at, linux: "__tb_path_deactivate_hop: read; already disabled → done",
				ours: "the read also checks that the entry is ours (same output adapter and HopID) before taking it down"},
			step{what: p.name + " hop: write entry, enable cleared", kind: "cfgW", adapter: p.ad, at: p.at,
				val:   func(e seqEnv) []uint32 { w := entry(e); return []uint32{w[0] &^ nhi.PathCS0Valid, w[1]} },
				linux: "__tb_path_deactivate_hop: hop.enable = 0, the rest kept"},
			step{what: p.name + " hop: read entry until pending clears", kind: "cfgR", adapter: p.ad, at: p.at, linux: "__tb_path_deactivate_hop: poll hop.pending, 500 ms"},
			step{what: p.name + " hop: write entry, egress FC and egress shared buffers cleared", kind: "cfgW", adapter: p.ad, at: p.at,
				val: func(e seqEnv) []uint32 {
					w := entry(e)
					return []uint32{w[0] &^ nhi.PathCS0Valid, w[1] &^ (nhi.PathCS1EgressFC | nhi.PathCS1EgressShared)}
				},
				linux: "__tb_path_deactivate_hop with clear_fc: egress_fc = egress_shared_buffer = 0 (ingress bits stay on a USB4 router)"},
		)
	}
	return steps
}

// diffSequence checks got against the table, row by row, and says where
// the first difference is.
func diffSequence(name string, table []step, e seqEnv, got []access) error {
	for i, s := range table {
		if i >= len(got) {
			return fmt.Errorf("%s: step %d (%s) missing; our sequence: %v", name, i, s.what, got)
		}
		a := got[i]
		switch {
		case a.kind != s.kind || a.off != s.at(e):
			return fmt.Errorf("%s: step %d (%s) expects %s at %#x; we did %v", name, i, s.what, s.kind, s.at(e), a)
		case s.adapter != nil && a.adapter != s.adapter(e):
			return fmt.Errorf("%s: step %d (%s) expects adapter %d; we did %v", name, i, s.what, s.adapter(e), a)
		case s.val == nil:
			continue
		}
		want := s.val(e)
		if s.mask != nil {
			if m := s.mask(e); want[0]&m != a.data[0]&m {
				return fmt.Errorf("%s: step %d (%s) expects %#x under mask %#x; we did %v", name, i, s.what, want[0], m, a)
			}
			continue
		}
		if fmt.Sprint(want) != fmt.Sprint(a.data) {
			return fmt.Errorf("%s: step %d (%s) expects %#08x; we did %v", name, i, s.what, want, a)
		}
	}
	if len(got) > len(table) {
		return fmt.Errorf("%s: accesses beyond the table: %v", name, got[len(table):])
	}
	return nil
}

// recDevice records BAR0 writes, leaving out ring 0's (the control
// channel runs beside the rings under test).
type recDevice struct {
	nhi.Device
	mu  sync.Mutex
	on  bool
	log []access
}

func (d *recDevice) Write32(off nhi.Reg, v uint32) {
	d.mu.Lock()
	ring0 := off < nhi.RegTxRingBase+nhi.RingBlockSize || (off >= nhi.RegRxRingBase && off < nhi.RegRxRingBase+nhi.RingBlockSize) ||
		(off >= nhi.RegTxOptionsBase && off < nhi.RegTxOptionsBase+nhi.RingOptionsSize) ||
		(off >= nhi.RegRxOptionsBase && off < nhi.RegRxOptionsBase+nhi.RingOptionsSize)
	if d.on && !ring0 {
		d.log = append(d.log, access{kind: "W", off: uint32(off), data: []uint32{v}})
	}
	d.mu.Unlock()
	d.Device.Write32(off, v)
}

func (d *recDevice) record() { d.mu.Lock(); d.on, d.log = true, nil; d.mu.Unlock() }
func (d *recDevice) take() []access {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.on = false
	return d.log
}

// recConfig records path config-space accesses, leaving out the topology
// reads (see the file comment) and the lane adapter's control path entry.
type recConfig struct {
	xdomain.ConfigAccess
	log []access
}

func (c *recConfig) ReadConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, length int) ([]uint32, error) {
	w, err := c.ConfigAccess.ReadConfig(ctx, route, space, adapter, offset, length)
	if space == ctl.SpacePath && offset != 2*nhi.ControlPathHopID {
		c.log = append(c.log, access{kind: "cfgR", adapter: adapter, off: uint32(offset), data: w})
	}
	return w, err
}

func (c *recConfig) WriteConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, data []uint32) error {
	c.log = append(c.log, access{kind: "cfgW", adapter: adapter, off: uint32(offset), data: append([]uint32(nil), data...)})
	return c.ConfigAccess.WriteConfig(ctx, route, space, adapter, offset, data)
}

func (c *recConfig) take() []access { l := c.log; c.log = nil; return l }

func TestRegisterSequencesMatchLinux(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := emu.NewHost(emu.Config{Logger: log})
	require.NoError(t, err)
	dev := &recDevice{Device: h}
	n, err := nhi.Probe(dev, nhi.Options{Logger: log})
	require.NoError(t, err)
	c, err := n.OpenControl(nhi.ControlConfig{Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(); n.Close() })

	const size, throttleNs = 32, 8192 + 100 // not a multiple of 256: rounds up
	flags := nhi.RingFrame | nhi.RingE2E
	tx, err := n.AllocTxRing(nhi.RingConfig{Hop: -1, Size: size, Flags: flags})
	require.NoError(t, err)
	rx, err := n.AllocRxRing(nhi.RingConfig{Hop: -1, Size: size, Flags: flags, E2ETxHop: tx.Hop(), SOFMask: 1 << 1, EOFMask: 1<<2 | 1<<3})
	require.NoError(t, err)
	require.NoError(t, tx.SetThrottling(throttleNs))
	require.NoError(t, rx.SetThrottling(throttleNs))

	env := func(r *nhi.Ring) seqEnv {
		e := seqEnv{hop: r.Hop(), hopCount: n.HopCount(), size: size, throttleUnits: (throttleNs + 255) / 256,
			e2eHop: tx.Hop(), sof: 1 << 1, eof: 1<<2 | 1<<3}
		ivr, shift := nhi.IVRReg(e.idx(r.IsRx()))
		e.vector = int(h.Read32(ivr) >> shift & nhi.IntVecAllocMask)
		return e
	}

	dev.record()
	require.NoError(t, tx.Start())
	txEnv := env(tx)
	require.NoError(t, diffSequence("tb_ring_start TX", linuxRingStart(false, txEnv), txEnv, dev.take()))

	dev.record()
	require.NoError(t, rx.Start())
	rxEnv := env(rx)
	require.NoError(t, diffSequence("tb_ring_start RX + priming", linuxRingStart(true, rxEnv), rxEnv, dev.take()))

	rc := &recConfig{ConfigAccess: c}
	pe := seqEnv{lane: 1, nhiAdp: 5, rxPath: 9, rxRing: rx.Hop(), txPath: 8, txRing: tx.Hop(), rxCredits: 14}
	paths := xdomain.DMAPaths{TransmitPath: pe.txPath, TransmitRing: pe.txRing, ReceivePath: pe.rxPath, ReceiveRing: pe.rxRing}
	require.NoError(t, xdomain.EnableDMAPaths(ctx, rc, 0x1, paths))
	require.NoError(t, diffSequence("tb_tunnel_activate (DMA)", linuxPathActivate, pe, rc.take()))

	dev.record()
	tx.Stop()
	require.NoError(t, diffSequence("tb_ring_stop TX", linuxRingStop(false, txEnv), txEnv, dev.take()))
	dev.record()
	rx.Stop()
	require.NoError(t, diffSequence("tb_ring_stop RX", linuxRingStop(true, rxEnv), rxEnv, dev.take()))

	require.NoError(t, xdomain.DisableDMAPaths(ctx, rc, 0x1, paths))
	require.NoError(t, diffSequence("tb_tunnel_deactivate (DMA)", linuxPathDeactivate(), pe, rc.take()))
}

// TestSequenceTableCatchesAReorder feeds the comparison tb_ring_stop's
// sequence as the table has it, then with two steps swapped and with one
// value changed: only the first passes.
func TestSequenceTableCatchesAReorder(t *testing.T) {
	e := seqEnv{hop: 2, hopCount: 12, size: 32, vector: 1, throttleUnits: 32, e2eHop: 2, sof: 2, eof: 12}
	table := linuxRingStop(false, e)
	var good []access
	for _, s := range table {
		a := access{kind: s.kind, off: s.at(e), data: []uint32{0}}
		if s.val != nil {
			a.data = s.val(e)
		}
		good = append(good, a)
	}
	require.NoError(t, diffSequence("in order", table, e, good))

	swapped := append([]access(nil), good...)
	swapped[3], swapped[4] = swapped[4], swapped[3] // options cleared after the base
	require.ErrorContains(t, diffSequence("swapped", table, e, swapped), "step 3")

	changed := append([]access(nil), good...)
	changed[len(changed)-1] = access{kind: "W", off: changed[len(changed)-1].off, data: []uint32{1}}
	require.Error(t, diffSequence("changed", table, e, changed))
	require.Error(t, diffSequence("short", table, e, good[:len(good)-1]))
}
