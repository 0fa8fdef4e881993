package xdomain

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
)

// DMA paths between the NHI and a remote host (tb_xdomain_enable_paths
// with the software connection manager, reference §2.7). Two paths, each
// a single hop in the host router:
//
//	RX "DMA RX": lane adapter, input HopID ReceivePath  → NHI adapter, output HopID ReceiveRing
//	TX "DMA TX": NHI adapter,  input HopID TransmitRing → lane adapter, output HopID TransmitPath
//
// The lane adapter is the host router's adapter toward the remote host: the
// first hop of its route. Entries are written in the path config space
// (TB_CFG_HOPS, two dwords per input HopID) over the control channel, RX
// path first, as tb_tunnel_alloc_dma orders them and tb_tunnel_activate
// activates them.
//
// Each hop is written as tb_path_activate writes it (dword 0: next HopID,
// output adapter, initial credits, enable; dword 1: weight 1, priority 5,
// flow control), with tb_dma_init_rx_path/tx_path's parameters:
//
//	DMA RX: ingress flow control only (the hop is the path's destination,
//	        and the RX egress mask is SOURCE|INTERNAL); credits
//	        min(usable credits of the lane adapter, TB_DMA_CREDITS), where
//	        usable = ADP_CS_4 total buffers − the control path's credits
//	DMA TX: ingress and egress flow control; TB_DMA_CREDITS
//
// A hop is taken down as __tb_path_deactivate_hop does: the entry is
// rewritten with enable cleared, read until its pending bit clears, then
// written once more with egress flow control and egress shared buffers
// cleared (clear_fc; ingress bits stay, as on a USB4 router).

// ConfigAccess is what path set-up needs from the control channel;
// *nhi.ControlChannel implements it.
type ConfigAccess interface {
	ReadConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, length int) ([]uint32, error)
	WriteConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, data []uint32) error
}

// DMAPaths are the four numbers of tb_xdomain_enable_paths. A negative
// (or zero) value leaves that direction alone.
type DMAPaths struct {
	TransmitPath int // output HopID on the lane adapter (the remote's in_hopid)
	TransmitRing int // local TX ring
	ReceivePath  int // input HopID on the lane adapter (our in_hopid)
	ReceiveRing  int // local RX ring
}

// Path set-up errors.
var (
	ErrPathRange = errors.New("xdomain path: HopID or ring out of range") // EINVAL
	ErrPathBusy  = errors.New("xdomain path: HopID already routed")       // EBUSY
	ErrTopology  = errors.New("xdomain path: host router topology")       // ENODEV
)

// hostRoute is the route of the host router, whose paths we program.
const hostRoute ctl.Route = 0

// adapterInfo is what path set-up reads from ADP_CS_2, ADP_CS_4 and
// ADP_CS_5.
type adapterInfo struct {
	number          uint8
	kind            uint32
	maxIn, maxOutID int
	totalBuffers    uint32 // ADP_CS_4 total buffers: the adapter's total credits
}

func readAdapter(ctx context.Context, c ConfigAccess, a uint8) (adapterInfo, error) {
	w, err := c.ReadConfig(ctx, hostRoute, ctl.SpaceAdapter, a, nhi.AdpCS0, nhi.AdpCS5+1)
	if err != nil {
		return adapterInfo{}, fmt.Errorf("read adapter %d: %w", a, err)
	}
	return adapterInfo{
		number:       a,
		kind:         w[nhi.AdpCS2] & nhi.AdpCS2TypeMask,
		maxIn:        int(w[nhi.AdpCS5] & nhi.AdpCS5MaxInHopIDMask),
		maxOutID:     int(w[nhi.AdpCS5] & nhi.AdpCS5MaxOutHopIDMask >> nhi.AdpCS5MaxOutHopIDShift),
		totalBuffers: w[nhi.AdpCS4] & nhi.AdpCS4TotalBuffersMask >> nhi.AdpCS4TotalBuffersShift,
	}, nil
}

// usableCredits is tb_usable_credits of a lane adapter: its total buffers
// less those of the control path (the initial credits of its HopID 0
// entry, 2 when that reads 0, as tb_init_port takes them). The arithmetic
// is unsigned, as Linux's: fewer buffers than control credits wraps and
// the RX hop then gets TB_DMA_CREDITS.
func usableCredits(ctx context.Context, c ConfigAccess, lane adapterInfo) (uint32, error) {
	w, err := c.ReadConfig(ctx, hostRoute, ctl.SpacePath, lane.number, nhi.PathEntryWords*nhi.ControlPathHopID, nhi.PathEntryWords)
	if err != nil {
		return 0, fmt.Errorf("read control path entry of adapter %d: %w", lane.number, err)
	}
	ctlCredits := uint32(nhi.PathEntryCredits([nhi.PathEntryWords]uint32(w)))
	if ctlCredits == 0 {
		ctlCredits = nhi.DefaultControlCredits
	}
	return lane.totalBuffers - ctlCredits, nil
}

// dmaAdapters finds the NHI adapter of the host router and checks the lane
// adapter toward route.
func dmaAdapters(ctx context.Context, c ConfigAccess, route ctl.Route) (nhiAdp, lane adapterInfo, err error) {
	if route == 0 || !route.Valid() {
		return nhiAdp, lane, fmt.Errorf("route %v: %w", route, ErrTopology)
	}
	cs, err := c.ReadConfig(ctx, hostRoute, ctl.SpaceRouter, 0, nhi.RouterCS1, 1)
	if err != nil {
		return nhiAdp, lane, fmt.Errorf("read ROUTER_CS_1: %w", err)
	}
	maxAdapter := uint8(cs[0] & nhi.RouterCS1MaxAdapterMask >> nhi.RouterCS1MaxAdapterShift)
	laneNumber := uint8(route & 0xff)
	if laneNumber > maxAdapter {
		return nhiAdp, lane, fmt.Errorf("lane adapter %d above max adapter %d: %w", laneNumber, maxAdapter, ErrTopology)
	}
	if lane, err = readAdapter(ctx, c, laneNumber); err != nil {
		return nhiAdp, lane, err
	}
	if lane.kind != nhi.AdapterLane {
		return nhiAdp, lane, fmt.Errorf("adapter %d has type %#x, not a lane adapter: %w", laneNumber, lane.kind, ErrTopology)
	}
	for a := uint8(1); a <= maxAdapter; a++ {
		info, err := readAdapter(ctx, c, a)
		if err != nil {
			return nhiAdp, lane, err
		}
		if info.kind == nhi.AdapterNHI {
			return info, lane, nil
		}
	}
	return nhiAdp, lane, fmt.Errorf("no NHI adapter among %d: %w", maxAdapter, ErrTopology)
}

// hop is one path entry to program: at adapter in, input HopID inHop,
// forwarding to out/outHop, each HopID within its adapter's range.
type hop struct {
	name           string
	in, out        uint8
	inHop, outHop  int
	minIn, inMax   int
	minOut, outMax int
	rx             bool   // the RX path's hop: its credits depend on the lane adapter
	credits        uint8  // initial credits
	fc             uint32 // flow control bits of dword 1
}

func (p DMAPaths) hops(nhiAdp, lane adapterInfo) []hop {
	var hops []hop
	// HopIDs 0..7 are reserved on lane adapters; on the NHI adapter the
	// HopID is a ring number, ring 0 being the control channel.
	const firstRing = 1
	if p.ReceivePath > 0 && p.ReceiveRing > 0 {
		hops = append(hops, hop{name: "DMA RX", in: lane.number, out: nhiAdp.number,
			inHop: p.ReceivePath, outHop: p.ReceiveRing,
			minIn: nhi.MinHopID, inMax: lane.maxIn, minOut: firstRing, outMax: nhiAdp.maxOutID,
			rx: true, fc: nhi.DMARxPathFC})
	}
	if p.TransmitPath > 0 && p.TransmitRing > 0 {
		hops = append(hops, hop{name: "DMA TX", in: nhiAdp.number, out: lane.number,
			inHop: p.TransmitRing, outHop: p.TransmitPath,
			minIn: firstRing, inMax: nhiAdp.maxIn, minOut: nhi.MinHopID, outMax: lane.maxOutID,
			credits: nhi.DMACredits, fc: nhi.DMATxPathFC})
	}
	return hops
}

func (h hop) check() error {
	if h.inHop < h.minIn || h.inHop > h.inMax || h.outHop < h.minOut || h.outHop > h.outMax {
		return fmt.Errorf("%s: adapter %d HopID %d → adapter %d HopID %d (in %d..%d, out %d..%d): %w",
			h.name, h.in, h.inHop, h.out, h.outHop, h.minIn, h.inMax, h.minOut, h.outMax, ErrPathRange)
	}
	return nil
}

func readEntry(ctx context.Context, c ConfigAccess, h hop) ([nhi.PathEntryWords]uint32, error) {
	w, err := c.ReadConfig(ctx, hostRoute, ctl.SpacePath, h.in, uint16(nhi.PathEntryWords*h.inHop), nhi.PathEntryWords)
	if err != nil {
		return [nhi.PathEntryWords]uint32{}, fmt.Errorf("%s: read path entry: %w", h.name, err)
	}
	return [nhi.PathEntryWords]uint32(w), nil
}

// EnableDMAPaths programs the RX and TX paths between the NHI and the
// remote host at route. A HopID already routed elsewhere is ErrPathBusy;
// enabling the same paths twice is not an error. On failure nothing stays
// enabled by this call.
func EnableDMAPaths(ctx context.Context, c ConfigAccess, route ctl.Route, p DMAPaths) error {
	nhiAdp, lane, err := dmaAdapters(ctx, c, route)
	if err != nil {
		return fmt.Errorf("enable paths to %v: %w", route, err)
	}
	hops := p.hops(nhiAdp, lane)
	for i, h := range hops {
		if err := h.check(); err != nil {
			return fmt.Errorf("enable paths to %v: %w", route, err)
		}
		if h.rx {
			usable, err := usableCredits(ctx, c, lane)
			if err != nil {
				return fmt.Errorf("enable paths to %v: %w", route, err)
			}
			hops[i].credits = uint8(min(usable, nhi.DMACredits))
		}
	}
	var done []hop
	for _, h := range hops {
		cur, err := readEntry(ctx, c, h)
		if err == nil {
			out, outHop, valid := nhi.PathEntryTarget(cur)
			switch {
			case valid && out == h.out && int(outHop) == h.outHop:
				continue // already ours
			case valid:
				err = fmt.Errorf("%s: adapter %d HopID %d routed to adapter %d HopID %d: %w", h.name, h.in, h.inHop, out, outHop, ErrPathBusy)
			default:
				err = writeEntry(ctx, c, h, nhi.PathEntry(h.out, uint16(h.outHop), h.credits, h.fc))
			}
		}
		if err != nil {
			for _, d := range done {
				deactivate(ctx, c, d)
			}
			return fmt.Errorf("enable paths to %v: %w", route, err)
		}
		done = append(done, h)
	}
	return nil
}

// DisableDMAPaths tears down the paths EnableDMAPaths set up with the same
// numbers; entries that route elsewhere are left alone.
func DisableDMAPaths(ctx context.Context, c ConfigAccess, route ctl.Route, p DMAPaths) error {
	nhiAdp, lane, err := dmaAdapters(ctx, c, route)
	if err != nil {
		return fmt.Errorf("disable paths to %v: %w", route, err)
	}
	var errs []error
	for _, h := range p.hops(nhiAdp, lane) {
		if h.check() != nil {
			continue
		}
		cur, err := readEntry(ctx, c, h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if out, outHop, valid := nhi.PathEntryTarget(cur); valid && out == h.out && int(outHop) == h.outHop {
			errs = append(errs, deactivateEntry(ctx, c, h, cur))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("disable paths to %v: %w", route, err)
	}
	return nil
}

// drainTimeout bounds the wait for a disabled hop's pending bit, as
// __tb_path_deactivate_hop's 500 ms; drainPoll is its 10–20 µs sleep.
const (
	drainTimeout = 500 * time.Millisecond
	drainPoll    = 10 * time.Microsecond
)

// deactivate takes one hop down as __tb_path_deactivate_hop does: enable
// cleared with the rest of the entry kept, a wait until the hop has no
// packets pending, then egress flow control and egress shared buffers
// cleared. An entry already disabled is left alone.
func deactivate(ctx context.Context, c ConfigAccess, h hop) error {
	e, err := readEntry(ctx, c, h)
	if err != nil {
		return err
	}
	return deactivateEntry(ctx, c, h, e)
}

// deactivateEntry is deactivate with the entry already read.
func deactivateEntry(ctx context.Context, c ConfigAccess, h hop, e [nhi.PathEntryWords]uint32) error {
	var err error
	if e[0]&nhi.PathCS0Valid == 0 {
		return nil
	}
	e[0] &^= nhi.PathCS0Valid
	if err := writeEntry(ctx, c, h, e); err != nil {
		return fmt.Errorf("%s: disable path entry: %w", h.name, err)
	}
	deadline := time.Now().Add(drainTimeout)
	for {
		if e, err = readEntry(ctx, c, h); err != nil {
			return err
		}
		if e[1]&nhi.PathCS1Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: adapter %d HopID %d still has packets pending after %v: %w", h.name, h.in, h.inHop, drainTimeout, context.DeadlineExceeded)
		}
		if err := sleep(ctx, drainPoll); err != nil {
			return err
		}
	}
	e[1] &^= nhi.PathCS1EgressFC | nhi.PathCS1EgressShared
	if err := writeEntry(ctx, c, h, e); err != nil {
		return fmt.Errorf("%s: clear flow control: %w", h.name, err)
	}
	return nil
}

func writeEntry(ctx context.Context, c ConfigAccess, h hop, e [nhi.PathEntryWords]uint32) error {
	return c.WriteConfig(ctx, hostRoute, ctl.SpacePath, h.in, uint16(nhi.PathEntryWords*h.inHop), e[:])
}
