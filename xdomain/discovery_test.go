package xdomain

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi/ctl"
	"tbstream/xdomain/property"
	"tbstream/xdomain/xdp"
)

// wire carries one host's control packets to its peer the way the fabric
// does: encoded to bytes with CRC, decoded on the far side, with the route
// rewritten to the route at which the receiver sees the sender.
type wire struct {
	peer  *Host
	back  ctl.Route // the route at which the peer sees us
	cut   atomic.Bool
	mu    sync.Mutex
	sent  []xdp.MessageType
	taint func(frame []byte) []byte // corrupts frames when set
}

func (w *wire) Send(_ context.Context, p ctl.Packet) error {
	if w.cut.Load() {
		return errors.New("cable unplugged")
	}
	frame, err := ctl.Encode(p)
	if err != nil {
		return err
	}
	w.mu.Lock()
	if env, err := xdp.Open(p.(*ctl.Raw)); err == nil {
		w.sent = append(w.sent, env.Type)
	}
	taint := w.taint
	w.mu.Unlock()
	if taint != nil {
		frame = taint(frame)
	}
	got, err := ctl.Decode(p.Type(), frame)
	if err != nil {
		return nil // the receiving NHI drops frames with a bad CRC
	}
	raw := got.(*ctl.Raw)
	raw.Route = w.back
	w.peer.HandlePacket(raw)
	return nil
}

var fastTiming = Timing{Timeout: 100 * time.Millisecond, Retries: 5, ShortTimeout: 5 * time.Millisecond, ChangedDelay: 5 * time.Millisecond}

var (
	uuid1 = xdp.MustParseUUID("11111111-0000-4000-8000-000000000001")
	uuid2 = xdp.MustParseUUID("22222222-0000-4000-8000-000000000002")
)

// pair makes host1 and host2 as in the documentation: host2 sees host1 at
// route 0x1 (0-1), host1 sees host2 at 0x503 (0-503).
func pair(t *testing.T) (h1, h2 *Host, w1, w2 *wire) {
	w1, w2 = &wire{back: 0x1}, &wire{back: 0x503}
	h1 = NewHost(HostConfig{UUID: uuid1, Name: "host1", Timing: fastTiming}, w1)
	h2 = NewHost(HostConfig{UUID: uuid2, Name: "host2", Timing: fastTiming}, w2)
	w1.peer, w2.peer = h2, h1
	t.Cleanup(func() { h1.Close(); h2.Close() })
	return h1, h2, w1, w2
}

func streamDir() *property.Dir {
	u := xdp.MustParseUUID("3a1cb984-c4d9-4469-a277-ce2fdfd11f0d")
	d := property.NewDir(&u)
	for _, kv := range []struct {
		k string
		v uint32
	}{{"prtcid", 1}, {"prtcvers", 1}, {"prtcrevs", 0}, {"prtcstns", 0}} {
		if err := d.AddValue(kv.k, kv.v); err != nil {
			panic(err)
		}
	}
	return d
}

// recorder is a ServiceDriver that logs its calls.
type recorder struct {
	mu      sync.Mutex
	events  []string
	probed  chan *Service
	changed chan *Service
	removed chan *Service
}

func newRecorder() *recorder {
	return &recorder{probed: make(chan *Service, 16), changed: make(chan *Service, 16), removed: make(chan *Service, 16)}
}

func (r *recorder) Probe(s *Service) error {
	r.log("probe " + s.ID.String())
	r.probed <- s
	return nil
}
func (r *recorder) Changed(s *Service) { r.log("changed " + s.ID.String()); r.changed <- s }
func (r *recorder) Remove(s *Service)  { r.log("remove " + s.ID.String()); r.removed <- s }
func (r *recorder) log(s string)       { r.mu.Lock(); r.events = append(r.events, s); r.mu.Unlock() }

func receive(t *testing.T, ch chan *Service, what string) *Service {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s", what)
		return nil
	}
}

func waitState(t *testing.T, xd *XDomain, s State) {
	t.Helper()
	require.Eventually(t, func() bool { return xd.Info().State == s }, 5*time.Second, time.Millisecond, "state %v, want %v", xd.Info().State, s)
}

// streamPair is pair with both hosts publishing `stream`, a recorder bound
// to the peer's `stream` service on each, and both connected.
func streamPair(t *testing.T) (h1, h2 *Host, d1, d2 *recorder, x1, x2 *XDomain) {
	h1, h2, _, _ = pair(t)
	d1, d2 = newRecorder(), newRecorder()
	require.NoError(t, h1.RegisterPropertyDir("stream", streamDir()))
	require.NoError(t, h2.RegisterPropertyDir("stream", streamDir()))
	h1.RegisterDriver("stream", 1, d1)
	h2.RegisterDriver("stream", 1, d2)
	x2, err := h2.Connect(0x1, 19)
	require.NoError(t, err)
	x1, err = h1.Connect(0x503, 19)
	require.NoError(t, err)
	return h1, h2, d1, d2, x1, x2
}

func TestDiscoveryFindsServicesBothWays(t *testing.T) {
	_, _, d1, d2, x1, x2 := streamPair(t)

	s2 := receive(t, d2.probed, "probe on host2")
	require.Equal(t, "0-1.0", s2.ID.String())
	require.Equal(t, "stream", s2.Key)
	require.Equal(t, uint32(1), s2.PrtcID)
	s1 := receive(t, d1.probed, "probe on host1")
	require.Equal(t, "0-503.0", s1.ID.String())

	waitState(t, x2, StateEnumerated)
	info := x2.Info()
	require.Equal(t, uuid1, info.RemoteUUID)
	require.Equal(t, ctl.Route(0x503), info.RemoteRoute, "the UUID response names how host1 sees host2")
	require.Equal(t, "host1", info.DeviceName)
	require.Equal(t, "Intel Corp.", info.VendorName)
	require.Equal(t, uint32(LinuxVendorID), info.VendorID)
	require.Equal(t, 19, info.MaxHopID, "host1 announced maxhopid 19")
	require.Equal(t, 19, x2.HopIDs.Out.Max())
	require.Equal(t, "0-503", x1.ID.String())
}

func TestPropertyBlockHasLinuxLayout(t *testing.T) {
	h1, _, _, _ := pair(t)
	require.NoError(t, h1.RegisterPropertyDir("stream", streamDir()))
	x, err := h1.Connect(0x503, 19)
	require.NoError(t, err)
	block, _, err := h1.propertyBlock(x)
	require.NoError(t, err)
	root, err := property.Parse(block)
	require.NoError(t, err)
	var order []string
	for _, p := range root.Properties {
		order = append(order, p.Key+" "+p.Type.String())
	}
	require.Equal(t, []string{"vendorid v", "vendorid t", "deviceid v", "devicerv v", "stream D", "deviceid t", "maxhopid v"}, order)
	require.Equal(t, uint32(19), root.Find("maxhopid", property.Value).Value)
	require.Equal(t, "host1", root.Find("deviceid", property.Text).Text)
}

func TestLocalPropertiesReachThePeer(t *testing.T) {
	_, h2, d1, d2, _, _ := streamPair(t)
	s2 := receive(t, d2.probed, "probe on host2")
	s1 := receive(t, d1.probed, "probe on host1")
	gen := h2.Generation()

	// host2 announces stream "backup" with in=8 out=9 to host1 only.
	local := s2.RemoteProperties() // any dir with the stream UUID
	local.Properties = nil
	bu := xdp.MustParseUUID("01234567-89ab-cdef-0011-223344556677")
	backup := property.NewDir(&bu)
	require.NoError(t, backup.AddValue("inhopid", 8))
	require.NoError(t, backup.AddValue("outhopid", 9))
	require.NoError(t, local.AddDir("backup", backup))
	s2.SetLocalProperties(local)
	s2.PropertiesChanged()
	require.Greater(t, h2.Generation(), gen)

	for {
		s := receive(t, d1.changed, "changed on host1")
		require.Same(t, s1, s)
		if b := s.RemoteProperties().FindDir("backup"); b != nil {
			require.Equal(t, uint32(8), b.Find("inhopid", property.Value).Value)
			require.Equal(t, uint32(9), b.Find("outhopid", property.Value).Value)
			require.NotNil(t, s.RemoteProperties().Find("prtcid", property.Value), "static keys stay")
			break
		}
	}

	// Removing the entry is seen too.
	s2.SetLocalProperties(nil)
	s2.PropertiesChanged()
	for {
		s := receive(t, d1.changed, "changed on host1")
		if s.RemoteProperties().FindDir("backup") == nil {
			break
		}
	}
}

func TestServiceIndexFollowsDirectoryOrder(t *testing.T) {
	h1, h2, _, _ := pair(t)
	nu := xdp.MustParseUUID("c66189ca-1cce-4195-bdb8-49592e5f5a4f")
	network := property.NewDir(&nu)
	require.NoError(t, network.AddValue("prtcid", 1))
	require.NoError(t, h1.RegisterPropertyDir("network", network))
	require.NoError(t, h1.RegisterPropertyDir("stream", streamDir()))
	d := newRecorder()
	h2.RegisterDriver("stream", 1, d)
	_, err := h1.Connect(0x503, 19)
	require.NoError(t, err)
	x2, err := h2.Connect(0x1, 19)
	require.NoError(t, err)
	s := receive(t, d.probed, "probe")
	require.Equal(t, "0-1.1", s.ID.String(), "network takes index 0")
	require.Len(t, x2.Services(), 2)

	// The network directory goes away: its service is removed, stream
	// keeps its index; a new directory takes the lowest free index.
	h1.UnregisterPropertyDir("network")
	require.Eventually(t, func() bool { return len(x2.Services()) == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, "0-1.1", x2.Services()[0].ID.String())
	du := xdp.MustParseUUID("3188cd10-6523-4a5a-a682-fdca07a248d8")
	require.NoError(t, h1.RegisterPropertyDir("dma_test", property.NewDir(&du)))
	require.Eventually(t, func() bool { return len(x2.Services()) == 2 }, 5*time.Second, time.Millisecond)
	require.Equal(t, "0-1.0", x2.Services()[0].ID.String())
	require.Equal(t, "dma_test", x2.Services()[0].Key)
}

func TestDriverRegisteredLaterIsProbed(t *testing.T) {
	h1, h2, _, _ := pair(t)
	require.NoError(t, h1.RegisterPropertyDir("stream", streamDir()))
	_, err := h1.Connect(0x503, 19)
	require.NoError(t, err)
	x2, err := h2.Connect(0x1, 19)
	require.NoError(t, err)
	waitState(t, x2, StateEnumerated)
	d := newRecorder()
	h2.RegisterDriver("stream", 1, d)
	require.Equal(t, "0-1.0", receive(t, d.probed, "probe").ID.String())
	h2.RegisterDriver("stream", 2, newRecorder()) // other protocol id: no match
}

func TestDisconnectRemovesServices(t *testing.T) {
	h1, h2, w1, w2 := pair(t)
	require.NoError(t, h1.RegisterPropertyDir("stream", streamDir()))
	d := newRecorder()
	h2.RegisterDriver("stream", 1, d)
	_, err := h1.Connect(0x503, 19)
	require.NoError(t, err)
	x2, err := h2.Connect(0x1, 19)
	require.NoError(t, err)
	s := receive(t, d.probed, "probe")
	w1.cut.Store(true)
	w2.cut.Store(true)
	h2.Disconnect(0x1)
	require.Same(t, s, receive(t, d.removed, "remove"))
	<-x2.Done()
	require.True(t, x2.Unplugged())
	require.Nil(t, h2.XDomain(0x1))
	s.PropertiesChanged() // harmless after unplug
}

func TestLoopIsDetected(t *testing.T) {
	w := &wire{back: 0x1}
	h := NewHost(HostConfig{UUID: uuid1, Timing: fastTiming}, w)
	w.peer = h
	t.Cleanup(h.Close)
	x, err := h.Connect(0x1, 19)
	require.NoError(t, err)
	waitState(t, x, StateLoop)
}

func TestSilentPeerFailsThenRecovers(t *testing.T) {
	h1, h2, _, w2 := pair(t)
	require.NoError(t, h1.RegisterPropertyDir("stream", streamDir()))
	w2.cut.Store(true)
	x2, err := h2.Connect(0x1, 19)
	require.NoError(t, err)
	waitState(t, x2, StateFailed)
	w2.mu.Lock()
	var uuidRequests int
	for _, ty := range w2.sent {
		if ty == xdp.TypeUUIDRequest {
			uuidRequests++
		}
	}
	w2.mu.Unlock()
	require.Zero(t, uuidRequests, "nothing got through the cut wire")

	// The peer comes up and announces itself: discovery resumes.
	w2.cut.Store(false)
	d := newRecorder()
	h2.RegisterDriver("stream", 1, d)
	_, err = h1.Connect(0x503, 19)
	require.NoError(t, err)
	require.Equal(t, "0-1.0", receive(t, d.probed, "probe").ID.String())
}

func TestCorruptFramesAreDroppedAndRetried(t *testing.T) {
	h1, h2, w1, _ := pair(t)
	require.NoError(t, h1.RegisterPropertyDir("stream", streamDir()))
	var n atomic.Int32
	w1.taint = func(f []byte) []byte {
		if n.Add(1)%3 == 1 { // every third frame from host1 arrives damaged
			f[len(f)/2] ^= 0x10
		}
		return f
	}
	d := newRecorder()
	h2.RegisterDriver("stream", 1, d)
	_, err := h1.Connect(0x503, 19)
	require.NoError(t, err)
	_, err = h2.Connect(0x1, 19)
	require.NoError(t, err)
	require.Equal(t, "0-1.0", receive(t, d.probed, "probe despite damaged frames").ID.String())
}

func TestRequestsAnswered(t *testing.T) {
	h1, _, w1, _ := pair(t)
	x1, err := h1.Connect(0x503, 19)
	require.NoError(t, err)
	// Capture what host1 answers by pointing its wire at a probe host.
	probe := &probeHost{}
	w1.peer = nil
	h1.sender = probe

	send := func(m xdp.Message) xdp.Message {
		raw, err := xdp.Encode(m)
		require.NoError(t, err)
		probe.last = nil
		h1.HandlePacket(raw)
		return probe.last
	}
	hdr := xdp.Header{Route: 0x503, Seq: 3}
	r := send(&xdp.UUIDRequest{Header: hdr, Old: true})
	require.Equal(t, &xdp.UUIDResponse{Header: hdr, UUID: uuid1, SrcRoute: 0x503}, r)

	r = send(&xdp.PropertiesRequest{Header: hdr, Src: uuid2, Dst: uuid2})
	require.Equal(t, &xdp.ErrorResponse{Header: hdr, Error: xdp.ErrorUnknownDomain}, r)

	r = send(&xdp.PropertiesRequest{Header: hdr, Src: uuid2, Dst: uuid1})
	pr := r.(*xdp.PropertiesResponse)
	require.Equal(t, uuid2, pr.Dst)
	require.Equal(t, h1.Generation(), pr.Generation)
	require.Equal(t, int(pr.DataLength), len(pr.Data), "a small block fits one page")

	require.Nil(t, send(&xdp.PropertiesRequest{Header: hdr, Src: uuid2, Dst: uuid1, Offset: 500}), "no answer past the end")

	r = send(&xdp.LinkStateStatusRequest{Header: hdr})
	require.Equal(t, &xdp.LinkStateStatusResponse{Header: hdr, Status: 0, SLW: 0x1, TLW: 0x1, SLS: 0xc, TLS: 0xc}, r)
	r = send(&xdp.LinkStateChangeRequest{Header: hdr, TLW: 0x3, TLS: 0xc})
	require.Equal(t, &xdp.ErrorResponse{Header: hdr, Error: xdp.ErrorNotReady}, r, "not in BONDING_UUID_HIGH")

	r = send(&xdp.PropertiesChangedRequest{Header: hdr, Src: uuid2})
	require.Equal(t, &xdp.PropertiesChangedResponse{Header: hdr}, r)

	// An unknown type is NOT_SUPPORTED; garbage is dropped and counted.
	raw, err := xdp.Encode(&xdp.UUIDRequest{Header: hdr})
	require.NoError(t, err)
	raw.Body[5] = 99
	probe.last = nil
	h1.HandlePacket(raw)
	require.Equal(t, &xdp.ErrorResponse{Header: hdr, Error: xdp.ErrorNotSupported}, probe.last)
	before := x1.Info().Stats.Dropped
	h1.HandlePacket(&ctl.Raw{Header: ctl.Header{Route: 0x503}, Kind: ctl.TypeXDomainRequest, Body: []uint32{1, 2}})
	require.Equal(t, before+1, x1.Info().Stats.Dropped)

	// Requests from a route with no XDomain, as tb_xdp_handle_request
	// answers them when it finds no xd.
	unknown := xdp.Header{Route: 0x7, Seq: 2}
	require.Equal(t, &xdp.UUIDResponse{Header: unknown, UUID: uuid1, SrcRoute: 0x7}, send(&xdp.UUIDRequest{Header: unknown}))
	require.Equal(t, &xdp.UUIDResponse{Header: unknown, UUID: uuid1, SrcRoute: 0x7}, send(&xdp.UUIDRequest{Header: unknown, Old: true}))
	require.Equal(t, &xdp.PropertiesChangedResponse{Header: unknown}, send(&xdp.PropertiesChangedRequest{Header: unknown, Src: uuid2}))
	require.Nil(t, send(&xdp.PropertiesRequest{Header: unknown, Src: uuid2, Dst: uuid1}), "PROPERTIES gets no answer")
	require.Equal(t, &xdp.ErrorResponse{Header: unknown, Error: xdp.ErrorNotReady}, send(&xdp.LinkStateStatusRequest{Header: unknown}))
	require.Equal(t, &xdp.ErrorResponse{Header: unknown, Error: xdp.ErrorNotReady}, send(&xdp.LinkStateChangeRequest{Header: unknown, TLW: 3}))
	raw, err = xdp.Encode(&xdp.UUIDRequest{Header: unknown})
	require.NoError(t, err)
	raw.Body[5] = 99
	probe.last = nil
	h1.HandlePacket(raw)
	require.Equal(t, &xdp.ErrorResponse{Header: unknown, Error: xdp.ErrorNotSupported}, probe.last)
	require.Nil(t, h1.XDomain(0x7), "answering creates no XDomain")
}

// probeHost records the last XDP message a host sent.
type probeHost struct{ last xdp.Message }

func (p *probeHost) Send(_ context.Context, pkt ctl.Packet) error {
	frame, err := ctl.Encode(pkt)
	if err != nil {
		return err
	}
	got, err := ctl.Decode(pkt.Type(), frame)
	if err != nil {
		return err
	}
	m, err := xdp.Decode(got.(*ctl.Raw))
	if err != nil {
		return err
	}
	if _, ok := m.(*xdp.UUIDRequest); ok {
		return nil // the host's own discovery; not what we look at
	}
	p.last = m
	return nil
}

// blockPeer is a remote host reduced to what discovery reads: it answers
// UUID, PROPERTIES_CHANGED and PROPERTIES requests, the last with a
// property block and generation the test sets.
type blockPeer struct {
	host *Host // the host under test, which sees the peer at route
	uuid xdp.UUID

	mu     sync.Mutex
	block  []uint32
	gen    uint32
	served int // PROPERTIES requests answered with the current block
}

func (b *blockPeer) set(t *testing.T, gen uint32, maxHopID int) {
	d := property.NewDir(nil)
	require.NoError(t, d.AddValue("vendorid", LinuxVendorID))
	require.NoError(t, d.AddValue("deviceid", LinuxDeviceID))
	if maxHopID >= 0 {
		require.NoError(t, d.AddValue("maxhopid", uint32(maxHopID)))
	}
	block, err := d.Format()
	require.NoError(t, err)
	b.mu.Lock()
	b.block, b.gen, b.served = block, gen, 0
	b.mu.Unlock()
}

func (b *blockPeer) Send(_ context.Context, p ctl.Packet) error {
	m, err := xdp.Decode(p.(*ctl.Raw))
	if err != nil {
		return nil
	}
	var resp xdp.Message
	switch m := m.(type) {
	case *xdp.UUIDRequest:
		resp = &xdp.UUIDResponse{Header: m.Header, UUID: b.uuid, SrcRoute: 0x1}
	case *xdp.PropertiesRequest:
		b.mu.Lock()
		resp, err = xdp.PropertiesPage(m, b.uuid, b.block, b.gen)
		b.served++
		b.mu.Unlock()
		if err != nil {
			return nil
		}
	case *xdp.PropertiesChangedRequest:
		resp = &xdp.PropertiesChangedResponse{Header: m.Header}
	default:
		return nil
	}
	raw, err := xdp.Encode(resp)
	if err != nil {
		return err
	}
	b.host.HandlePacket(raw)
	return nil
}

// reread makes the host read the peer's block again and waits until it has
// handled the answer.
func (b *blockPeer) reread(t *testing.T, xd *XDomain) {
	b.mu.Lock()
	b.served = 0
	b.mu.Unlock()
	xd.peerChanged()
	require.Eventually(t, func() bool {
		b.mu.Lock()
		served := b.served
		b.mu.Unlock()
		return served > 0 && xd.Info().State == StateEnumerated
	}, 5*time.Second, time.Millisecond)
}

func TestMaxHopIDAndGenerationAsLinux(t *testing.T) {
	peer := &blockPeer{uuid: uuid2}
	h := NewHost(HostConfig{UUID: uuid1, Name: "host1", Timing: fastTiming, Logger: quietLog()}, peer)
	peer.host = h
	t.Cleanup(h.Close)

	// No maxhopid: 15 (XDOMAIN_DEFAULT_MAX_HOPID).
	peer.set(t, 0xfffffffe, -1)
	xd, err := h.Connect(0x503, 19)
	require.NoError(t, err)
	waitState(t, xd, StateEnumerated)
	require.Equal(t, 15, xd.Info().MaxHopID)
	require.Equal(t, uint32(0xfffffffe), xd.Info().Generation)

	// A newer generation announcing maxhopid 6, below 8: taken as it is,
	// so no output HopID can be allocated.
	peer.set(t, 0xffffffff, 6)
	peer.reread(t, xd)
	require.Equal(t, 6, xd.Info().MaxHopID)
	require.Equal(t, 6, xd.HopIDs.Out.Max())
	_, err = xd.HopIDs.Out.Alloc(-1)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Equal(t, uint32(0xffffffff), xd.Info().Generation)

	// The counter wraps to 0: Linux's plain "gen <= current" keeps the old
	// block (a wrap-around compare would take this one).
	peer.set(t, 0, 7)
	peer.reread(t, xd)
	require.Equal(t, 6, xd.Info().MaxHopID, "generation 0 after 0xffffffff is not newer")
	require.Equal(t, uint32(0xffffffff), xd.Info().Generation)
}
