package xdomain

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tbstream/hopid"
	"tbstream/nhi/ctl"
	"tbstream/xdomain/property"
	"tbstream/xdomain/xdp"
)

// State is where an XDomain's discovery stands.
type State int

// Discovery states (a subset of Linux's: lane bonding is not modelled).
const (
	StateUUID       State = iota // asking the peer for its UUID
	StateProperties              // reading the peer's property block
	StateEnumerated              // services known; waiting for changes
	StateLoop                    // the peer is ourselves
	StateFailed                  // the peer stopped answering; waiting for it to speak
	StateRemoved                 // unplugged
)

func (s State) String() string {
	switch s {
	case StateUUID:
		return "uuid"
	case StateProperties:
		return "properties"
	case StateEnumerated:
		return "enumerated"
	case StateLoop:
		return "loop"
	case StateFailed:
		return "failed"
	case StateRemoved:
		return "removed"
	}
	return fmt.Sprintf("state%d", int(s))
}

var errTimeout = errors.New("no response")

// xdpError maps an ERROR_RESPONSE code to the errno Linux uses.
func xdpError(code xdp.ErrorCode) error {
	var errno syscall.Errno
	switch code {
	case xdp.ErrorNotSupported:
		errno = syscall.EOPNOTSUPP
	case xdp.ErrorNotReady:
		errno = syscall.EAGAIN
	default:
		errno = syscall.EIO
	}
	return fmt.Errorf("peer answered %v: %w", code, errno)
}

// Info is a snapshot of what is known about a peer.
type Info struct {
	ID          HostID
	State       State
	RemoteUUID  xdp.UUID
	RemoteRoute ctl.Route // how the peer sees us
	VendorID    uint32
	DeviceID    uint32
	VendorName  string
	DeviceName  string
	// MaxHopID is the peer's announced maxhopid (15 when absent);
	// LocalMaxHopID is our lane adapter's maximum input HopID.
	MaxHopID      int
	LocalMaxHopID int
	Generation    uint32 // of the peer's block last accepted
	Stats         Stats

	// Added says a property block of the peer was accepted: Linux has
	// added the XDomain device then, and keeps it through later re-reads
	// until the unplug.
	Added bool
}

// Stats counts a peer's control traffic.
type Stats struct {
	Requests  uint64 // requests from the peer answered
	Responses uint64 // responses to our requests
	Dropped   uint64 // malformed or unexpected packets dropped
}

// XDomain is one remote host connected to this host, as Linux's struct
// tb_xdomain: its identity, its property block and services, and the
// HopID spaces every service on the connection shares.
type XDomain struct {
	host          *Host
	ID            HostID
	localMaxHopID int
	// HopIDs are the connection's input and output HopID spaces.
	HopIDs *hopid.Allocator

	ctx    context.Context
	cancel context.CancelFunc
	kick   chan struct{} // the peer's properties changed: re-read
	notify chan struct{} // ours changed: tell the peer
	probe  chan struct{} // a driver was registered: bind services
	done   chan struct{}

	reqMu  sync.Mutex // one outstanding request per peer
	waitMu sync.Mutex
	waiter chan xdp.Message

	stats struct{ requests, responses, dropped atomic.Uint64 }

	mu         sync.Mutex
	info       Info
	haveGen    bool
	remote     *property.Dir
	services   []*Service
	serviceIDs map[uint32]bool
}

func newXDomain(h *Host, id HostID, localMaxHopID int) *XDomain {
	ctx, cancel := context.WithCancel(context.Background())
	xd := &XDomain{
		host:          h,
		ID:            id,
		localMaxHopID: localMaxHopID,
		HopIDs:        hopid.New(localMaxHopID, 0),
		ctx:           ctx,
		cancel:        cancel,
		kick:          make(chan struct{}, 1),
		notify:        make(chan struct{}, 1),
		probe:         make(chan struct{}, 1),
		done:          make(chan struct{}),
		serviceIDs:    make(map[uint32]bool),
	}
	xd.info = Info{ID: id, State: StateUUID, MaxHopID: hopid.DefaultRemoteMax, LocalMaxHopID: localMaxHopID}
	return xd
}

// Info returns a snapshot of the peer.
func (xd *XDomain) Info() Info {
	xd.mu.Lock()
	defer xd.mu.Unlock()
	info := xd.info
	info.Stats = Stats{
		Requests:  xd.stats.requests.Load(),
		Responses: xd.stats.responses.Load(),
		Dropped:   xd.stats.dropped.Load(),
	}
	return info
}

// Unplugged reports whether the peer is gone.
func (xd *XDomain) Unplugged() bool {
	xd.mu.Lock()
	defer xd.mu.Unlock()
	return xd.info.State == StateRemoved
}

// Services returns the peer's services in index order.
func (xd *XDomain) Services() []*Service {
	xd.mu.Lock()
	defer xd.mu.Unlock()
	return append([]*Service(nil), xd.services...)
}

// Done is closed when the peer has been removed and its services too.
func (xd *XDomain) Done() <-chan struct{} { return xd.done }

func (xd *XDomain) setState(s State) {
	xd.mu.Lock()
	xd.info.State = s
	xd.mu.Unlock()
}

func (xd *XDomain) start() { go xd.run() }

func (xd *XDomain) remove() {
	xd.cancel()
	<-xd.done
}

func (xd *XDomain) notifyChanged() {
	select {
	case xd.notify <- struct{}{}:
	default:
	}
}

func (xd *XDomain) peerChanged() {
	select {
	case xd.kick <- struct{}{}:
	default:
	}
}

// run is the discovery state machine of §4.4, without lane bonding: UUID,
// then PROPERTIES, then wait for changes on either side.
func (xd *XDomain) run() {
	h := xd.host
	defer func() {
		xd.mu.Lock()
		xd.info.State = StateRemoved
		services := xd.services
		xd.services = nil
		xd.mu.Unlock()
		for i := len(services) - 1; i >= 0; i-- {
			services[i].unbind()
		}
		h.log.Info("host disconnected", "peer", xd.ID)
		close(xd.done)
	}()
	if sleep(xd.ctx, h.timing.ShortTimeout) != nil {
		return
	}
	known := false
	for {
		if !known {
			switch err := xd.exchangeUUID(); {
			case err == nil:
				known = true
				xd.notifyChanged() // make the peer read us (INIT state)
			case errors.Is(err, errLoop):
				xd.setState(StateLoop)
				h.log.Warn("xdomain: loop detected, the peer is this host", "peer", xd.ID)
				<-xd.ctx.Done()
				return
			case xd.ctx.Err() != nil:
				return
			default:
				xd.setState(StateFailed)
				h.log.Warn("xdomain: peer does not answer UUID requests", "peer", xd.ID, "err", err)
			}
		}
		if known {
			if err := xd.readProperties(); err != nil {
				if xd.ctx.Err() != nil {
					return
				}
				xd.setState(StateFailed)
				h.log.Warn("xdomain: cannot read the peer's properties", "peer", xd.ID, "err", err)
			}
		}
		// Wait for something to do: a change on either side.
		for waiting := true; waiting; {
			select {
			case <-xd.ctx.Done():
				return
			case <-xd.notify:
				if sleep(xd.ctx, h.timing.ChangedDelay) != nil {
					return
				}
				if known {
					xd.sendChanged()
				}
			case <-xd.probe:
				for _, svc := range xd.Services() {
					svc.bind()
				}
			case <-xd.kick:
				if sleep(xd.ctx, h.timing.ShortTimeout) != nil {
					return
				}
				waiting = false
			}
		}
	}
}

var errLoop = errors.New("loop: the peer has our UUID")

func (xd *XDomain) exchangeUUID() error {
	h := xd.host
	xd.setState(StateUUID)
	req := &xdp.UUIDRequest{Header: xdp.Header{Route: xd.ID.Route}}
	resp, err := h.request(xd.ctx, xd, req, xdp.TypeUUIDResponse, func(seq uint8) { req.Seq = seq })
	if err != nil {
		return err
	}
	r := resp.(*xdp.UUIDResponse)
	if r.UUID == h.cfg.UUID {
		return errLoop
	}
	xd.mu.Lock()
	xd.info.RemoteUUID = r.UUID
	xd.info.RemoteRoute = r.SrcRoute
	xd.mu.Unlock()
	return nil
}

func (xd *XDomain) sendChanged() {
	h := xd.host
	req := &xdp.PropertiesChangedRequest{Header: xdp.Header{Route: xd.ID.Route}, Src: h.cfg.UUID}
	if _, err := h.request(xd.ctx, xd, req, xdp.TypePropertiesChangedResponse, func(seq uint8) { req.Seq = seq }); err != nil && xd.ctx.Err() == nil {
		h.log.Warn("xdomain: peer did not acknowledge PROPERTIES_CHANGED", "peer", xd.ID, "err", err)
	}
}

// readProperties reads the peer's block page by page and, if it is newer
// than the one we have, takes it and re-enumerates the services.
func (xd *XDomain) readProperties() error {
	h := xd.host
	xd.setState(StateProperties)
	xd.mu.Lock()
	remoteUUID := xd.info.RemoteUUID
	xd.mu.Unlock()

	var block []uint32
	var gen uint32
	for restart := 0; ; restart++ {
		var r xdp.BlockReader
		var err error
		for done := false; !done && err == nil; {
			req := &xdp.PropertiesRequest{Header: xdp.Header{Route: xd.ID.Route}, Src: h.cfg.UUID, Dst: remoteUUID, Offset: r.Offset()}
			var resp xdp.Message
			resp, err = h.request(xd.ctx, xd, req, xdp.TypePropertiesResponse, func(seq uint8) { req.Seq = seq })
			if err != nil {
				break
			}
			done, err = r.Add(resp.(*xdp.PropertiesResponse))
		}
		if errors.Is(err, xdp.ErrGeneration) && restart < h.timing.Retries {
			continue // the peer changed its block while we read it
		}
		if err != nil {
			return err
		}
		block, gen = r.Block()
		break
	}

	xd.mu.Lock()
	// Only a newer generation is taken, compared as Linux does (plain
	// unsigned: a peer whose counter wraps is not re-read until replug).
	stale := xd.haveGen && gen <= xd.info.Generation
	xd.mu.Unlock()
	if stale {
		xd.setState(StateEnumerated)
		return nil
	}
	dir, err := property.Parse(block)
	if err != nil {
		xd.stats.dropped.Add(1)
		return fmt.Errorf("parse properties of %s: %w", xd.ID, err)
	}
	vendor, device := dir.Find("vendorid", property.Value), dir.Find("deviceid", property.Value)
	if vendor == nil || device == nil {
		xd.stats.dropped.Add(1)
		return fmt.Errorf("properties of %s lack vendorid or deviceid", xd.ID)
	}
	// maxhopid as announced, whatever its value (populate_properties; 15
	// when absent). Linux keeps it in an int, so a value above 2^31-1
	// reads negative there too; below 8 no output HopID can be taken.
	maxHopID := hopid.DefaultRemoteMax
	if p := dir.Find("maxhopid", property.Value); p != nil {
		maxHopID = int(int32(p.Value))
	}
	xd.HopIDs.Out.SetMax(maxHopID)

	xd.mu.Lock()
	first := !xd.haveGen
	xd.haveGen = true
	xd.info.Added = true
	xd.remote = dir
	xd.info.Generation = gen
	xd.info.VendorID, xd.info.DeviceID = vendor.Value, device.Value
	xd.info.VendorName, xd.info.DeviceName = textOf(dir, "vendorid"), textOf(dir, "deviceid")
	xd.info.MaxHopID = maxHopID
	xd.info.State = StateEnumerated
	xd.mu.Unlock()
	if first {
		h.log.Info("new host found", "peer", xd.ID, "vendor", fmt.Sprintf("%#x", vendor.Value), "device", fmt.Sprintf("%#x", device.Value), "name", textOf(dir, "deviceid"))
	}
	xd.enumerateServices(dir)
	return nil
}

func textOf(d *property.Dir, key string) string {
	if p := d.Find(key, property.Text); p != nil {
		return p.Text
	}
	return ""
}

// roundTrip sends one request and waits up to timeout for a response of
// type want or an ERROR_RESPONSE. Responses of other types (late answers to
// earlier requests) are dropped: stricter than Linux, which matches on route
// and protocol only.
func (xd *XDomain) roundTrip(ctx context.Context, raw *ctl.Raw, want xdp.MessageType, timeout time.Duration) (xdp.Message, error) {
	xd.reqMu.Lock()
	defer xd.reqMu.Unlock()
	ch := make(chan xdp.Message, 1)
	xd.waitMu.Lock()
	xd.waiter = ch
	xd.waitMu.Unlock()
	defer func() {
		xd.waitMu.Lock()
		xd.waiter = nil
		xd.waitMu.Unlock()
	}()
	if err := xd.host.sender.Send(ctx, raw); err != nil {
		return nil, fmt.Errorf("send to %s: %w", xd.ID, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, errTimeout
		case m := <-ch:
			if t := m.MessageType(); t == want || t == xdp.TypeErrorResponse {
				xd.stats.responses.Add(1)
				return m, nil
			}
			xd.stats.dropped.Add(1)
		}
	}
}

// deliver hands a response to the waiting request. As Linux's
// tb_xdomain_match, a response matches on route and protocol only, so a
// late answer to an earlier attempt is as good as the current one.
func (xd *XDomain) deliver(p *ctl.Raw, env xdp.Envelope) {
	if env.Protocol != xdp.ProtocolUUID {
		xd.stats.dropped.Add(1)
		return
	}
	m, err := xdp.Decode(p)
	if err != nil {
		xd.stats.dropped.Add(1)
		return
	}
	xd.waitMu.Lock()
	ch := xd.waiter
	xd.waitMu.Unlock()
	if ch == nil {
		xd.stats.dropped.Add(1) // nobody asked
		return
	}
	select {
	case ch <- m:
	default:
		xd.stats.dropped.Add(1) // a duplicate of a response already taken
	}
}
