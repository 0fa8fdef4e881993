package xdomain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"tbstream/nhi/ctl"
	"tbstream/xdomain/property"
	"tbstream/xdomain/xdp"
)

// Sender transmits control packets on the control channel (NHI ring 0),
// as nhi.ControlChannel does. Send should return promptly: the host calls
// it while answering requests, with a context bounded by Timing.Timeout.
type Sender interface {
	Send(ctx context.Context, p ctl.Packet) error
}

// Timing of the discovery protocol (§4.3). The zero value of every field
// means the kernel's constant; tests shorten them.
type Timing struct {
	// Timeout is XDOMAIN_DEFAULT_TIMEOUT, the wait for one response.
	Timeout time.Duration
	// Retries is XDOMAIN_RETRIES, attempts per request.
	Retries int
	// ShortTimeout is XDOMAIN_SHORT_TIMEOUT, the delay before the first
	// exchange and before re-reading properties after PROPERTIES_CHANGED.
	ShortTimeout time.Duration
	// ChangedDelay is the delay before PROPERTIES_CHANGED is sent after a
	// local change, which lets several changes share one notification.
	ChangedDelay time.Duration
}

func (t Timing) withDefaults() Timing {
	if t.Timeout <= 0 {
		t.Timeout = time.Second
	}
	if t.Retries <= 0 {
		t.Retries = 10
	}
	if t.ShortTimeout <= 0 {
		t.ShortTimeout = 100 * time.Millisecond
	}
	if t.ChangedDelay <= 0 {
		t.ChangedDelay = 50 * time.Millisecond
	}
	return t
}

// Values Linux publishes in every property block (§4.6).
const (
	LinuxVendorID   = 0x8086
	LinuxVendorName = "Intel Corp."
	LinuxDeviceID   = 0x1
	LinuxDeviceRev  = 0x80000100
)

// Link is what a host reports of its lane adapter toward a peer in
// LINK_STATE_STATUS responses: the fields Linux reads from LANE_ADP_CS_0
// and LANE_ADP_CS_1 of the downstream port (xdp.SupportedWidth*,
// xdp.TargetWidth*, xdp.TargetSpeed*).
type Link struct {
	SupportedWidth, TargetWidth, SupportedSpeed, TargetSpeed uint8
}

// SingleLaneGen3 returns the link tbstream reports: one USB4 Gen 3 lane, not
// bondable (supported width 0x1). tbstream does not bond lanes, on the
// emulated cable or on hardware, so a peer must not try: a Linux peer
// reading width < 2 skips lane bonding and goes on to PROPERTIES at once,
// whichever UUID is higher. The supported speed field is LANE_ADP_CS_0's
// encoding of Gen 2 and Gen 3 (Linux only logs it).
func SingleLaneGen3() Link {
	return Link{
		SupportedWidth: xdp.SupportedWidthSingle, TargetWidth: xdp.TargetWidthSingle,
		SupportedSpeed: 0xc, TargetSpeed: xdp.TargetSpeedGen3,
	}
}

// HostConfig describes the local host.
type HostConfig struct {
	// UUID is the host router's UUID.
	UUID xdp.UUID
	// Name is published as deviceid text (Linux uses the node name).
	Name string
	// Domain is the domain number in host names ("0" of "0-503").
	Domain uint32
	// Link is reported in LINK_STATE_STATUS responses; the zero value
	// means SingleLaneGen3().
	Link   Link
	Timing Timing
	Logger *slog.Logger
}

// Host is the local end of every XDomain connection of one host router: it
// owns the published property block and its generation, answers the
// peers' discovery requests, and runs a discovery state machine for each
// connected peer (XDomain).
type Host struct {
	cfg    HostConfig
	timing Timing
	log    *slog.Logger
	sender Sender

	mu         sync.Mutex
	generation uint32
	root       *property.Dir // vendor/device entries and registered service directories
	xds        map[ctl.Route]*XDomain
	drivers    []driverEntry
	closed     bool
}

type driverEntry struct {
	key    string
	prtcID uint32
	drv    ServiceDriver
}

// NewHost returns a host that sends through s. The property block starts
// with what Linux publishes before any service driver is loaded.
func NewHost(cfg HostConfig, s Sender) *Host {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Link == (Link{}) {
		cfg.Link = SingleLaneGen3()
	}
	root := property.NewDir(nil)
	// Keys are constants; Add* cannot fail for them.
	_ = root.AddValue("vendorid", LinuxVendorID)
	_ = root.AddText("vendorid", LinuxVendorName)
	_ = root.AddValue("deviceid", LinuxDeviceID)
	_ = root.AddValue("devicerv", LinuxDeviceRev)
	return &Host{
		cfg:        cfg,
		timing:     cfg.Timing.withDefaults(),
		log:        cfg.Logger,
		sender:     s,
		generation: rand.Uint32(), // like Linux: get_random_u32()
		root:       root,
		xds:        make(map[ctl.Route]*XDomain),
	}
}

// UUID returns the local host router's UUID.
func (h *Host) UUID() xdp.UUID { return h.cfg.UUID }

// Generation returns the current property block generation.
func (h *Host) Generation() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.generation
}

// RegisterPropertyDir publishes a service directory under key in every
// property block, as tb_register_property_dir: the generation goes up and
// every connected peer is told.
func (h *Host) RegisterPropertyDir(key string, dir *property.Dir) error {
	h.mu.Lock()
	err := h.root.AddDir(key, dir.Copy())
	if err == nil {
		h.generation++
	}
	xds := h.xdomainsLocked()
	h.mu.Unlock()
	if err != nil {
		return fmt.Errorf("register property directory %q: %w", key, err)
	}
	for _, xd := range xds {
		xd.notifyChanged()
	}
	return nil
}

// UnregisterPropertyDir removes a service directory.
func (h *Host) UnregisterPropertyDir(key string) {
	h.mu.Lock()
	removed := h.root.Remove(key, property.Directory)
	if removed {
		h.generation++
	}
	xds := h.xdomainsLocked()
	h.mu.Unlock()
	if removed {
		for _, xd := range xds {
			xd.notifyChanged()
		}
	}
}

// RegisterDriver binds drv to remote services with this key and protocol
// id (TB_SERVICE(key, prtcid)). Services already present are probed.
func (h *Host) RegisterDriver(key string, prtcID uint32, drv ServiceDriver) {
	h.mu.Lock()
	h.drivers = append(h.drivers, driverEntry{key: key, prtcID: prtcID, drv: drv})
	xds := h.xdomainsLocked()
	h.mu.Unlock()
	for _, xd := range xds {
		xd.probeUnbound()
	}
}

func (h *Host) driverFor(svc *Service) ServiceDriver {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.drivers {
		if d.key == svc.Key && d.prtcID == svc.PrtcID {
			return d.drv
		}
	}
	return nil
}

func (h *Host) xdomainsLocked() []*XDomain {
	xds := make([]*XDomain, 0, len(h.xds))
	for _, xd := range h.xds {
		xds = append(xds, xd)
	}
	return xds
}

// XDomains returns the connected peers.
func (h *Host) XDomains() []*XDomain {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.xdomainsLocked()
}

// XDomain returns the peer at route, or nil.
func (h *Host) XDomain(route ctl.Route) *XDomain {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.xds[route]
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("xdomain host closed")

// Connect starts discovery with a peer found at route behind a lane
// adapter accepting input HopIDs up to localMaxHopID (tb_xdomain_alloc plus
// tb_xdomain_add). A peer already known at route is returned as it is.
func (h *Host) Connect(route ctl.Route, localMaxHopID int) (*XDomain, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if xd := h.xds[route]; xd != nil {
		h.mu.Unlock()
		return xd, nil
	}
	xd := newXDomain(h, HostID{Domain: h.cfg.Domain, Route: route}, localMaxHopID)
	h.xds[route] = xd
	h.mu.Unlock()
	xd.start()
	return xd, nil
}

// Disconnect removes the peer at route (hot unplug): discovery stops and
// its services are removed.
func (h *Host) Disconnect(route ctl.Route) {
	h.mu.Lock()
	xd := h.xds[route]
	delete(h.xds, route)
	h.mu.Unlock()
	if xd != nil {
		xd.remove()
	}
}

// Close disconnects every peer.
func (h *Host) Close() {
	h.mu.Lock()
	h.closed = true
	xds := h.xdomainsLocked()
	h.xds = map[ctl.Route]*XDomain{}
	h.mu.Unlock()
	for _, xd := range xds {
		xd.remove()
	}
}

// propertyBlock builds the block served to xd (update_property_block): the
// global root, each of xd's services' local properties merged into the
// directory of the same key, then deviceid text and maxhopid.
func (h *Host) propertyBlock(xd *XDomain) ([]uint32, uint32, error) {
	h.mu.Lock()
	root := h.root.Copy()
	gen := h.generation
	h.mu.Unlock()
	for _, svc := range xd.Services() {
		local := svc.LocalProperties()
		if local == nil {
			continue
		}
		dst := root.FindDir(svc.Key)
		if dst == nil {
			continue // we publish no directory for this service
		}
		if err := dst.Merge(local, false); err != nil {
			return nil, 0, fmt.Errorf("merge %s local properties: %w", svc.ID, err)
		}
	}
	if err := root.AddText("deviceid", h.cfg.Name); err != nil {
		return nil, 0, err
	}
	if err := root.AddValue("maxhopid", uint32(xd.localMaxHopID)); err != nil {
		return nil, 0, err
	}
	block, err := root.Format()
	return block, gen, err
}

// bumpGeneration records a change of xd's local service properties
// (tb_service_properties_changed).
func (h *Host) bumpGeneration() {
	h.mu.Lock()
	h.generation++
	h.mu.Unlock()
}

// HandlePacket takes an XDomain packet received on the control channel;
// its route is the route at which this host sees the sender. Requests are
// answered here; responses wake the request waiting for them. Malformed
// packets are dropped and counted on the peer.
func (h *Host) HandlePacket(p *ctl.Raw) {
	env, err := xdp.Open(p)
	xd := h.XDomain(p.Route)
	if err != nil {
		if xd != nil {
			xd.stats.dropped.Add(1)
		}
		h.log.Debug("xdomain: dropped malformed packet", "route", p.Route, "err", err)
		return
	}
	if xd == nil {
		if p.Kind == ctl.TypeXDomainRequest && env.Protocol == xdp.ProtocolUUID {
			h.answerUnknown(p, env)
		}
		return
	}
	if p.Kind == ctl.TypeXDomainResponse {
		xd.deliver(p, env)
		return
	}
	if env.Protocol != xdp.ProtocolUUID {
		xd.stats.dropped.Add(1)
		return // no other protocol handlers are registered
	}
	xd.stats.requests.Add(1)
	m, err := xdp.Decode(p)
	if err != nil {
		if errors.Is(err, xdp.ErrType) {
			h.respond(&xdp.ErrorResponse{Header: env.Header, Error: xdp.ErrorNotSupported})
		} else {
			xd.stats.dropped.Add(1)
		}
		return
	}
	h.answer(xd, m)
}

// answerUnknown answers a request from a route with no XDomain (a peer
// that talks before its plug event reached us, say) as
// tb_xdp_handle_request does when it finds no xd: UUID and
// PROPERTIES_CHANGED requests are answered all the same, PROPERTIES gets
// no answer, LINK_STATE requests get NOT_READY and other types
// NOT_SUPPORTED. Malformed packets are dropped.
func (h *Host) answerUnknown(p *ctl.Raw, env xdp.Envelope) {
	m, err := xdp.Decode(p)
	if err != nil {
		if errors.Is(err, xdp.ErrType) {
			h.respond(&xdp.ErrorResponse{Header: env.Header, Error: xdp.ErrorNotSupported})
		} else {
			h.log.Debug("xdomain: dropped malformed request from an unknown route", "route", p.Route, "err", err)
		}
		return
	}
	hdr := m.XDPHeader()
	switch m.(type) {
	case *xdp.UUIDRequest:
		h.respond(&xdp.UUIDResponse{Header: hdr, UUID: h.cfg.UUID, SrcRoute: hdr.Route})
	case *xdp.PropertiesChangedRequest:
		h.respond(&xdp.PropertiesChangedResponse{Header: hdr})
	case *xdp.PropertiesRequest:
		// no answer: the peer retries
	case *xdp.LinkStateStatusRequest, *xdp.LinkStateChangeRequest:
		h.respond(&xdp.ErrorResponse{Header: hdr, Error: xdp.ErrorNotReady})
	default:
		h.respond(&xdp.ErrorResponse{Header: hdr, Error: xdp.ErrorNotSupported})
	}
}

func (h *Host) answer(xd *XDomain, m xdp.Message) {
	hdr := m.XDPHeader()
	switch m := m.(type) {
	case *xdp.UUIDRequest:
		h.respond(&xdp.UUIDResponse{Header: hdr, UUID: h.cfg.UUID, SrcRoute: xd.ID.Route})
	case *xdp.PropertiesRequest:
		if m.Dst != h.cfg.UUID {
			h.respond(&xdp.ErrorResponse{Header: hdr, Error: xdp.ErrorUnknownDomain})
			return
		}
		block, gen, err := h.propertyBlock(xd)
		if err != nil {
			h.log.Error("xdomain: cannot build property block", "peer", xd.ID, "err", err)
			return
		}
		resp, err := xdp.PropertiesPage(m, h.cfg.UUID, block, gen)
		if err != nil {
			return // Linux sends nothing for an offset past the end
		}
		h.respond(resp)
	case *xdp.PropertiesChangedRequest:
		h.respond(&xdp.PropertiesChangedResponse{Header: hdr})
		xd.peerChanged()
	case *xdp.LinkStateStatusRequest:
		// tb_xdp_link_state_status_response: status 0 and the lane
		// adapter's fields. A single-lane answer makes a Linux peer skip
		// lane bonding (tb_xdomain_get_link_status: width < 2 is
		// -EOPNOTSUPP, which is not retried).
		l := h.cfg.Link
		h.respond(&xdp.LinkStateStatusResponse{Header: hdr, Status: 0,
			SLW: l.SupportedWidth, TLW: l.TargetWidth, SLS: l.SupportedSpeed, TLS: l.TargetSpeed})
	case *xdp.LinkStateChangeRequest:
		// Linux accepts a CHANGE only in its BONDING_UUID_HIGH state,
		// which it enters only when lane bonding is possible on its side
		// (a dual-lane port). tbstream never bonds, so it never is in that
		// state, and Linux's answer for every other state is NOT_READY.
		h.respond(&xdp.ErrorResponse{Header: hdr, Error: xdp.ErrorNotReady})
	default:
		h.respond(&xdp.ErrorResponse{Header: hdr, Error: xdp.ErrorNotSupported})
	}
}

func (h *Host) respond(m xdp.Message) {
	raw, err := xdp.Encode(m)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), h.timing.Timeout)
		err = h.sender.Send(ctx, raw)
		cancel()
	}
	if err != nil {
		h.log.Debug("xdomain: cannot send response", "type", m.MessageType(), "err", err)
	}
}

// request sends m to xd and waits for its response: up to Retries attempts
// of Timeout each, the sequence number being the attempt modulo 4. An
// ERROR_RESPONSE becomes an error (NOT_READY is retried).
func (h *Host) request(ctx context.Context, xd *XDomain, m xdp.Message, want xdp.MessageType, set func(seq uint8)) (xdp.Message, error) {
	var last error
	for attempt := 0; attempt < h.timing.Retries; attempt++ {
		set(uint8(attempt % 4))
		raw, err := xdp.Encode(m)
		if err != nil {
			return nil, err
		}
		resp, err := xd.roundTrip(ctx, raw, want, h.timing.Timeout)
		switch {
		case err == nil:
		case errors.Is(err, errTimeout):
			last = err
			continue
		default:
			return nil, err
		}
		if e, ok := resp.(*xdp.ErrorResponse); ok {
			last = xdpError(e.Error)
			if e.Error == xdp.ErrorNotReady {
				if err := sleep(ctx, h.timing.Timeout); err != nil {
					return nil, err
				}
				continue
			}
			return nil, last
		}
		return resp, nil
	}
	return nil, fmt.Errorf("%v to %s: %d attempts: %w", m.MessageType(), xd.ID, h.timing.Retries, last)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
