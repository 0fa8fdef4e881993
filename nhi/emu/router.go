package emu

import (
	"sync"
	"sync/atomic"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
)

// Topology of the emulated host router.
//
//	adapter 0      control adapter (router config space)
//	adapters 1..4  lane adapters (two USB4 ports × two lanes); cables plug here
//	adapter 5      NHI adapter: its HopIDs are ring numbers
const (
	firstLaneAdapter = 1
	laneAdapters     = 4
	nhiAdapter       = 5
	maxAdapter       = nhiAdapter
	// laneMaxHopID is the max input and output HopID of a lane adapter
	// (ADP_CS_5; tbget reads 19 on real host routers).
	laneMaxHopID = 19
	// nhiAdapterMaxHop bounds the NHI adapter HopIDs, hence the rings.
	nhiAdapterMaxHop = 63

	routerSpaceWords  = 0x40
	adapterSpaceWords = 0x40
	intelVendorID     = 0x8086
	emuDeviceID       = 0x7eb5 // an arbitrary ID marking the emulator
	tbDMACredits      = 14     // TB_DMA_CREDITS
	// laneTotalBuffers and laneControlCredits are a lane adapter's
	// ADP_CS_4 total buffers and the initial credits of its control path
	// (HopID 0), the values of Linux's KUnit host router model.
	laneTotalBuffers   = 60
	laneControlCredits = 2
)

// txRoute is where a TX ring's frames go: the TX path entry at the NHI
// adapter for input HopID = ring.
type txRoute struct {
	ok      bool
	adapter uint8  // output (lane) adapter
	hopID   uint16 // output HopID on the cable
}

// rxSource is the lane adapter and input HopID whose RX path ends in a
// ring.
type rxSource struct {
	adapter uint8
	hopID   uint16
}

// routeTables are derived from the path entries; readers take an
// immutable snapshot without locking.
type routeTables struct {
	tx       []txRoute                             // by ring
	rx       [laneAdapters][laneMaxHopID + 1]int16 // ring or -1, by lane adapter and input HopID
	rxSource []rxSource                            // by ring; adapter 0 if none
}

// adapterRegs is one adapter's config spaces.
type adapterRegs struct {
	header [adapterSpaceWords]uint32
	paths  []uint32 // PathEntryWords per input HopID
}

// router is the emulated host router: its config spaces, the routing they
// imply, and control-packet handling.
type router struct {
	h      *Host
	tables atomic.Pointer[routeTables]

	// mu protects the config spaces.
	mu       sync.Mutex
	space    [routerSpaceWords]uint32
	adapters [maxAdapter + 1]adapterRegs
}

func newRouter(h *Host) *router {
	rt := &router{h: h}
	rt.space[nhi.RouterCS0] = intelVendorID | emuDeviceID<<16
	rt.space[nhi.RouterCS1] = maxAdapter << nhi.RouterCS1MaxAdapterShift
	rt.space[nhi.RouterCS7] = uint32(h.uid)
	rt.space[nhi.RouterCS8] = uint32(h.uid >> 32)
	for a := range rt.adapters {
		typ, maxHop := nhi.AdapterInactive, 0
		switch {
		case a >= firstLaneAdapter && a < firstLaneAdapter+laneAdapters:
			typ, maxHop = nhi.AdapterLane, laneMaxHopID
		case a == nhiAdapter:
			typ, maxHop = nhi.AdapterNHI, h.hopCount-1
		}
		hdr := &rt.adapters[a].header
		hdr[nhi.AdpCS0] = intelVendorID | emuDeviceID<<16
		hdr[nhi.AdpCS2] = typ
		hdr[nhi.AdpCS3] = uint32(a) << nhi.AdpCS3AdapterShift
		if typ != nhi.AdapterInactive {
			buffers := uint32(tbDMACredits)
			if typ == nhi.AdapterLane {
				buffers = laneTotalBuffers
			}
			hdr[nhi.AdpCS4] = buffers << nhi.AdpCS4TotalBuffersShift
			hdr[nhi.AdpCS5] = uint32(maxHop) | uint32(maxHop)<<nhi.AdpCS5MaxOutHopIDShift
			rt.adapters[a].paths = make([]uint32, nhi.PathEntryWords*(maxHop+1))
			if typ == nhi.AdapterLane {
				rt.adapters[a].paths[nhi.PathEntryWords*nhi.ControlPathHopID] = laneControlCredits << nhi.PathCS0CreditsShift
			}
		}
	}
	rt.rebuild()
	return rt
}

func (rt *router) txRoute(ring int) txRoute { return rt.tables.Load().tx[ring] }

func (rt *router) rxRoute(adapter uint8, hopID uint16) (int, bool) {
	i := int(adapter) - firstLaneAdapter
	if i < 0 || i >= laneAdapters || hopID > laneMaxHopID {
		return 0, false
	}
	ring := rt.tables.Load().rx[i][hopID]
	return int(ring), ring >= 0
}

func (rt *router) rxSource(ring int) (rxSource, bool) {
	s := rt.tables.Load().rxSource[ring]
	return s, s.adapter != 0
}

// rebuild derives the routing tables from the path entries. Called with
// mu held (or before the router is shared).
func (rt *router) rebuild() {
	hops := rt.h.hopCount
	t := &routeTables{tx: make([]txRoute, hops), rxSource: make([]rxSource, hops)}
	for i := range t.rx {
		for j := range t.rx[i] {
			t.rx[i][j] = -1
		}
	}
	// TX paths: NHI adapter, input HopID = ring → lane adapter.
	nhiPaths := rt.adapters[nhiAdapter].paths
	for ring := 1; ring < hops; ring++ {
		w := nhiPaths[nhi.PathEntryWords*ring]
		out := uint8(w & nhi.PathCS0OutAdapterMask >> nhi.PathCS0OutAdapterShift)
		hopID := w & nhi.PathCS0OutHopIDMask
		if w&nhi.PathCS0Valid != 0 && isLane(out) && hopID <= laneMaxHopID {
			t.tx[ring] = txRoute{ok: true, adapter: out, hopID: uint16(hopID)}
		}
	}
	// RX paths: lane adapter, input HopID → NHI adapter, output HopID = ring.
	for i := range laneAdapters {
		a := uint8(firstLaneAdapter + i)
		paths := rt.adapters[a].paths
		for hop := nhi.MinHopID; hop <= laneMaxHopID; hop++ {
			w := paths[nhi.PathEntryWords*hop]
			out := w & nhi.PathCS0OutAdapterMask >> nhi.PathCS0OutAdapterShift
			ring := int(w & nhi.PathCS0OutHopIDMask)
			if w&nhi.PathCS0Valid == 0 || out != nhiAdapter || ring == 0 || ring >= hops {
				continue
			}
			t.rx[i][hop] = int16(ring)
			if t.rxSource[ring].adapter == 0 {
				t.rxSource[ring] = rxSource{adapter: a, hopID: uint16(hop)}
			}
		}
	}
	rt.tables.Store(t)
}

func isLane(a uint8) bool { return a >= firstLaneAdapter && a < firstLaneAdapter+laneAdapters }

func (rt *router) clearPaths() {
	rt.mu.Lock()
	for a := range rt.adapters {
		// HopID 0 is the control path, the hardware's own: it stays.
		if p := rt.adapters[a].paths; len(p) > nhi.PathEntryWords {
			clear(p[nhi.PathEntryWords:])
		}
	}
	rt.rebuild()
	rt.mu.Unlock()
	rt.h.regrant()
}

// read returns length dwords of a config space, or the error to answer.
func (rt *router) read(space ctl.ConfigSpace, adapter uint8, offset, length int) ([]uint32, ctl.ErrorCode, bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	words, code, ok := rt.spaceLocked(space, adapter)
	if !ok {
		return nil, code, false
	}
	if offset+length > len(words) {
		return nil, ctl.ErrorInvalidConfigSpace, false
	}
	return append([]uint32(nil), words[offset:offset+length]...), 0, true
}

// write stores data into a config space. Router and adapter headers are
// read-only in this model (writes are accepted and ignored, as for
// read-only registers); path entries take effect at once.
func (rt *router) write(space ctl.ConfigSpace, adapter uint8, offset int, data []uint32) (ctl.ErrorCode, bool) {
	rt.mu.Lock()
	words, code, ok := rt.spaceLocked(space, adapter)
	if !ok || offset+len(data) > len(words) {
		rt.mu.Unlock()
		if ok {
			code = ctl.ErrorInvalidConfigSpace
		}
		return code, false
	}
	if space != ctl.SpacePath {
		rt.mu.Unlock()
		return 0, true
	}
	copy(words[offset:], data)
	rt.rebuild()
	rt.mu.Unlock()
	rt.h.regrant()
	rt.h.kick()
	return 0, true
}

func (rt *router) spaceLocked(space ctl.ConfigSpace, adapter uint8) ([]uint32, ctl.ErrorCode, bool) {
	if space == ctl.SpaceRouter {
		return rt.space[:], 0, true
	}
	if int(adapter) > maxAdapter {
		return nil, ctl.ErrorNoSuchPort, false
	}
	switch space {
	case ctl.SpaceAdapter:
		return rt.adapters[adapter].header[:], 0, true
	case ctl.SpacePath:
		if rt.adapters[adapter].paths == nil {
			return nil, ctl.ErrorInvalidConfigSpace, false
		}
		return rt.adapters[adapter].paths, 0, true
	}
	return nil, ctl.ErrorInvalidConfigSpace, false
}

// fromNHI handles a control frame the NHI sent on TX ring 0: packets for
// route 0 are this router's; packets for a peer's route cross its cable.
func (rt *router) fromNHI(pdf uint8, frame []byte) {
	h := rt.h
	body, err := ctl.ParseFrame(frame)
	if err != nil {
		h.counters.ctlBadFrame.Add(1)
		h.log.Debug("emu: control frame from NHI dropped", "err", err)
		return
	}
	route, _ := ctl.RouteOf(body)
	if route == 0 {
		rt.handle(ctl.Type(pdf), body)
		return
	}
	for _, l := range h.lanes {
		if c := l.cable.Load(); c != nil && c.port.PeerRoute == route {
			c.end.sendControl(pdf, frame)
			return
		}
	}
	switch t := ctl.Type(pdf); {
	case t == ctl.TypeError && rt.onPeerPath(route):
		// A plug-event acknowledgement to the (modelled away) router
		// between us and the peer.
	case t == ctl.TypeRead || t == ctl.TypeWrite:
		rt.reply(&ctl.ConfigError{Header: ctl.Header{Route: route, Reply: true},
			Code: ctl.ErrorPortNotConnected, Adapter: uint8(route & 0x3f)})
	default:
		h.counters.ctlDropped.Add(1)
	}
}

// onPeerPath reports whether route is a router on the way to a plugged
// peer (the depth-1 router of route 0x503, say).
func (rt *router) onPeerPath(route ctl.Route) bool {
	for _, l := range rt.h.lanes {
		if c := l.cable.Load(); c != nil {
			if p := c.port.PeerRoute; route.Depth() < p.Depth() && p&(1<<(ctl.RouteShift*route.Depth())-1) == route {
				return true
			}
		}
	}
	return false
}

// handle answers a packet addressed to this router.
func (rt *router) handle(t ctl.Type, body []uint32) {
	h := rt.h
	p, err := ctl.DecodeBody(t, body)
	if err != nil {
		h.counters.ctlBadFrame.Add(1)
		return
	}
	reply := ctl.Header{Route: 0, Reply: true}
	switch p := p.(type) {
	case *ctl.ConfigRead:
		data, code, ok := rt.read(p.Addr.Space, p.Addr.Adapter, int(p.Addr.Offset), int(p.Addr.Length))
		if !ok {
			rt.reply(&ctl.ConfigError{Header: reply, Code: code, Adapter: p.Addr.Adapter})
			return
		}
		addr := p.Addr
		addr.Adapter = 0 // the responder's upstream adapter
		rt.reply(&ctl.ConfigRead{Header: reply, Addr: addr, Data: data})
	case *ctl.ConfigWrite:
		if len(p.Data) != int(p.Addr.Length) {
			h.counters.ctlBadFrame.Add(1)
			return
		}
		if code, ok := rt.write(p.Addr.Space, p.Addr.Adapter, int(p.Addr.Offset), p.Data); !ok {
			rt.reply(&ctl.ConfigError{Header: reply, Code: code, Adapter: p.Addr.Adapter})
			return
		}
		addr := p.Addr
		addr.Adapter = 0
		rt.reply(&ctl.ConfigWrite{Header: reply, Addr: addr})
	case *ctl.ConfigError:
		if p.Code != ctl.ErrorAckPlugEvent {
			h.counters.ctlDropped.Add(1)
		}
	default:
		h.counters.ctlDropped.Add(1)
	}
}

// reply sends a packet from this router to the NHI.
func (rt *router) reply(p ctl.Packet) {
	frame, err := ctl.Encode(p)
	if err != nil {
		rt.h.log.Error("emu: encode reply", "err", err)
		return
	}
	rt.h.deliverControl(uint8(p.Type()), frame)
}

// plugEvent tells the NHI that a peer appeared at (or left) route: the
// EVENT comes from the router one level up, naming its adapter.
func (rt *router) plugEvent(route ctl.Route, unplug bool) {
	d := route.Depth()
	shift := ctl.RouteShift * (d - 1)
	parent := route & (1<<shift - 1)
	adapter := uint8(route >> shift & 0x3f)
	rt.reply(&ctl.Event{Header: ctl.Header{Route: parent, Reply: true}, Adapter: adapter, Unplug: unplug})
}

// fromCable handles a control frame from the peer: its route is rewritten
// to the peer's route as this host sees it, so that replies and requests
// name the peer the way local software knows it.
func (h *Host) fromCable(c *Cable, pdf uint8, frame []byte) {
	body, err := ctl.ParseFrame(frame)
	if err != nil || len(body) < ctl.HeaderWords {
		h.counters.ctlBadFrame.Add(1)
		return
	}
	const routeHiMask = 1<<22 - 1
	route := uint64(c.port.PeerRoute)
	body[0] = body[0]&^routeHiMask | uint32(route>>32)&routeHiMask
	body[1] = uint32(route)
	out, err := ctl.AppendFrame(make([]byte, 0, len(frame)), body)
	if err != nil {
		h.counters.ctlBadFrame.Add(1)
		return
	}
	h.deliverControl(pdf, out)
}
