package xdomain

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/nhi/ctl"
	"tbstream/xdomain/xdp"
)

// The tests in this file build requests the way Linux's xdomain.c does
// (tb_xdp_fill_header and the structs of tb_msgs.h, dword by dword, without
// package xdp's encoder), feed them to a Host as wire bytes and check the
// bytes it answers with.

// xdpUUIDWords is the XDP protocol UUID b638d70e-42ff-40bb-97c2-90e2c0b2ff07
// as Linux's header carries it: the uuid_t bytes read as little-endian u32s,
// each then sent big-endian (0e d7 38 b6 …).
var xdpUUIDWords = [4]uint32{0x0ed738b6, 0xbb40ff42, 0xe290c297, 0x07ffb2c0}

// linuxFrame is what Linux's tb_xdp_fill_header plus the control channel
// put on the wire for a message of the given type and payload dwords:
// route_hi, route_lo, length_sn (dwords after the 12-byte xd_hdr | seq<<27),
// the protocol UUID, the type, the payload; every dword big-endian, then
// the CRC-32C.
func linuxFrame(route uint64, seq uint8, typ uint32, payload ...uint32) []byte {
	size := 32 + 4*len(payload) // struct size in bytes
	words := []uint32{uint32(route >> 32), uint32(route), uint32((size-12)/4) | uint32(seq)<<27&(3<<27)}
	words = append(words, xdpUUIDWords[:]...)
	words = append(words, typ)
	words = append(words, payload...)
	var b []byte
	for _, w := range words {
		b = binary.BigEndian.AppendUint32(b, w)
	}
	return binary.BigEndian.AppendUint32(b, ctl.CRC(b))
}

// Linux's enum tb_xdp_type values used here.
const (
	linuxUUIDRequest             = 12
	linuxUUIDResponse            = 2
	linuxPropertiesRequest       = 3
	linuxPropertiesResponse      = 4
	linuxPropertiesChangedReq    = 5
	linuxPropertiesChangedResp   = 6
	linuxErrorResponse           = 7
	linuxLinkStateStatusRequest  = 15
	linuxLinkStateStatusResponse = 16
	linuxLinkStateChangeRequest  = 17
	linuxLinkStateChangeResponse = 18
)

// uuidWords is a uuid_t as Linux's structs carry it (see xdpUUIDWords).
func uuidWords(u xdp.UUID) []uint32 {
	w := make([]uint32, 4)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(u[4*i:])
	}
	return w
}

// capture is a Sender that keeps every frame a host sends, as wire bytes.
// Requests the host itself sends (its own discovery) go to onRequest.
type capture struct {
	mu        sync.Mutex
	responses chan []byte
	onRequest func(frame []byte)
}

func newCapture() *capture { return &capture{responses: make(chan []byte, 64)} }

func (c *capture) Send(_ context.Context, p ctl.Packet) error {
	frame, err := ctl.Encode(p)
	if err != nil {
		return err
	}
	if p.Type() == ctl.TypeXDomainRequest {
		c.mu.Lock()
		f := c.onRequest
		c.mu.Unlock()
		if f != nil {
			f(frame)
		}
		return nil
	}
	select {
	case c.responses <- frame:
	default: // nobody is reading: a stray answer after the test
	}
	return nil
}

// exchange feeds a Linux-built request frame to h and returns the frame h
// answers with, or nil when it sends none.
func exchange(t *testing.T, h *Host, c *capture, req []byte) []byte {
	t.Helper()
	for len(c.responses) > 0 {
		<-c.responses
	}
	p, err := ctl.Decode(ctl.TypeXDomainRequest, req)
	require.NoError(t, err)
	h.HandlePacket(p.(*ctl.Raw)) // answers synchronously, through Send
	select {
	case f := <-c.responses:
		return f
	default:
		return nil
	}
}

// words splits a frame into its dwords without the CRC, checking the CRC.
func words(t *testing.T, frame []byte) []uint32 {
	t.Helper()
	require.NoError(t, ctl.CheckFrame(frame))
	w := make([]uint32, (len(frame)-ctl.CRCSize)/4)
	for i := range w {
		w[i] = binary.BigEndian.Uint32(frame[4*i:])
	}
	return w
}

func linkHost(t *testing.T, link Link) (*Host, *capture) {
	c := newCapture()
	h := NewHost(HostConfig{UUID: uuid1, Name: "tbstream", Link: link, Timing: fastTiming, Logger: quietLog()}, c)
	t.Cleanup(h.Close)
	return h, c
}

// TestLinkStateStatusExchange is a captured LINK_STATE_STATUS exchange: a
// Linux host at route 0x1 asks (tb_xdp_link_state_status_request, sequence
// 2) and the reply is Linux's tb_xdp_link_state_status_response layout with
// status 0 and a single Gen 3 lane.
func TestLinkStateStatusExchange(t *testing.T) {
	h, c := linkHost(t, Link{})
	_, err := h.Connect(0x1, 19)
	require.NoError(t, err)

	req := linuxFrame(0x1, 2, linuxLinkStateStatusRequest)
	require.Equal(t, ""+
		"00000000"+"00000001"+"10000005"+ // route, length 5 | seq 2
		"0ed738b6"+"bb40ff42"+"e290c297"+"07ffb2c0"+ // XDP UUID
		"0000000f"+ // LINK_STATE_STATUS_REQUEST
		hex.EncodeToString(req[32:]), // CRC
		hex.EncodeToString(req))
	reply := exchange(t, h, c, req)
	require.NotNil(t, reply)
	t.Logf("LINK_STATE_STATUS request from Linux: %x", req)
	t.Logf("our LINK_STATE_STATUS response:       %x", reply)

	w := words(t, reply)
	require.Equal(t, []uint32{
		0x00000000, 0x00000001, // route (xd->route), no reply bit
		0x10000007,                                     // length 7 | seq 2
		0x0ed738b6, 0xbb40ff42, 0xe290c297, 0x07ffb2c0, // XDP UUID
		linuxLinkStateStatusResponse,
		0,          // status: success
		0x0c0c0101, // slw 0x1 (single lane), tlw 0x1, sls 0xc, tls 0xc (Gen 3): u8s in CPU order, dword big-endian
	}, w)
	require.Equal(t, "0000000000000001100000070ed738b6bb40ff42e290c29707ffb2c000000010000000000c0c0101",
		hex.EncodeToString(reply[:40]), "the reply's bytes on the wire")
	// What Linux's requester reads from it (tb_xdp_link_state_status_request
	// copies the struct and takes the u8 fields from byte offsets 36..39).
	slw, tlw, sls, tls := reply[39], reply[38], reply[37], reply[36]
	require.Equal(t, []byte{0x1, 0x1, 0xc, 0xc}, []byte{slw, tlw, sls, tls})
	require.Less(t, slw, byte(xdp.SupportedWidthDual), "Linux sees a single-lane adapter and skips bonding")
}

func TestLinkStateChangeIsNotReady(t *testing.T) {
	h, c := linkHost(t, Link{})
	_, err := h.Connect(0x1, 19)
	require.NoError(t, err)
	// tb_xdp_link_state_change_request: tlw 0x3 (dual), tls 0xc.
	reply := exchange(t, h, c, linuxFrame(0x1, 1, linuxLinkStateChangeRequest, 0x3|0xc<<8))
	require.Equal(t, []uint32{0, 1, 0x08000006, 0x0ed738b6, 0xbb40ff42, 0xe290c297, 0x07ffb2c0, linuxErrorResponse, uint32(xdp.ErrorNotReady)}, words(t, reply))
}

func TestRequestsFromUnknownRoute(t *testing.T) {
	h, c := linkHost(t, Link{})
	const route = 0x503 // no XDomain there
	hdr := func(length, typ uint32) []uint32 {
		return []uint32{0, route, length | 3<<27, 0x0ed738b6, 0xbb40ff42, 0xe290c297, 0x07ffb2c0, typ}
	}
	// UUID_REQUEST: the root switch UUID and src_route = the request's route.
	w := words(t, exchange(t, h, c, linuxFrame(route, 3, linuxUUIDRequest)))
	require.Equal(t, append(append(hdr(11, linuxUUIDResponse), uuidWords(uuid1)...), 0, route), w)
	// PROPERTIES_CHANGED_REQUEST: acknowledged.
	w = words(t, exchange(t, h, c, linuxFrame(route, 3, linuxPropertiesChangedReq, uuidWords(uuid2)...)))
	require.Equal(t, hdr(5, linuxPropertiesChangedResp), w)
	// PROPERTIES_REQUEST: no answer.
	props := append(append(uuidWords(uuid2), uuidWords(uuid1)...), 0)
	require.Nil(t, exchange(t, h, c, linuxFrame(route, 3, linuxPropertiesRequest, props...)))
	// LINK_STATE requests: NOT_READY.
	w = words(t, exchange(t, h, c, linuxFrame(route, 3, linuxLinkStateStatusRequest)))
	require.Equal(t, append(hdr(6, linuxErrorResponse), uint32(xdp.ErrorNotReady)), w)
	w = words(t, exchange(t, h, c, linuxFrame(route, 3, linuxLinkStateChangeRequest, 0x3)))
	require.Equal(t, append(hdr(6, linuxErrorResponse), uint32(xdp.ErrorNotReady)), w)
	require.Nil(t, h.XDomain(route))
}

// linuxPeer runs Linux's XDomain state machine (tb_xdomain_state_work of
// xdomain.c, software connection manager with a dual-lane port, so
// bonding_possible) against a Host, one state at a time, without waiting:
// where Linux would queue the state again after XDOMAIN_DEFAULT_TIMEOUT
// ("retry_state"), it counts a retry. It answers the Host's own requests as
// Linux's tb_xdp_handle_request does.
type linuxPeer struct {
	t      *testing.T
	host   *Host
	c      *capture
	route  uint64 // where the host sees the peer, and the peer the host
	local  xdp.UUID
	remote xdp.UUID
	// notSupported is the errno Linux's tb_xdp_handle_error maps
	// ERROR_NOT_SUPPORTED to: -ENOTSUPP in the trees that retry on it,
	// -EOPNOTSUPP in those that skip bonding at once.
	notSupported syscall.Errno

	mu                sync.Mutex
	state             string
	targetLinkWidth   uint8
	states            []string
	retries           int
	linkStatusSent    int
	linkChangeSent    int
	bondingUUIDHighIn int
}

const errENOTSUPP = syscall.Errno(524) // the kernel-internal ENOTSUPP

func newLinuxPeer(t *testing.T, h *Host, c *capture, route uint64, local xdp.UUID, notSupported syscall.Errno) *linuxPeer {
	p := &linuxPeer{t: t, host: h, c: c, route: route, local: local, notSupported: notSupported}
	c.mu.Lock()
	c.onRequest = p.handleRequest
	c.mu.Unlock()
	return p
}

// handleRequest answers the host's requests: UUID and, in state
// BONDING_UUID_HIGH only, LINK_STATE_CHANGE; PROPERTIES with a minimal
// block would need a property block, so it gets NOT_READY (the host
// retries; this test is about the peer's side).
func (p *linuxPeer) handleRequest(frame []byte) {
	body, err := ctl.ParseFrame(frame)
	if err != nil || len(body) < 8 {
		return
	}
	seq := uint8(body[2] >> 27 & 3)
	var resp []byte
	switch body[7] {
	case linuxUUIDRequest:
		resp = linuxFrame(p.route, seq, linuxUUIDResponse, append(uuidWords(p.local), 0, uint32(p.route))...)
	case linuxLinkStateChangeRequest:
		p.mu.Lock()
		if p.state == "BONDING_UUID_HIGH" && len(body) >= 9 {
			p.targetLinkWidth = uint8(body[8])
			resp = linuxFrame(p.route, seq, linuxLinkStateChangeResponse, 0)
		}
		p.mu.Unlock()
		if resp == nil {
			resp = linuxFrame(p.route, seq, linuxErrorResponse, uint32(xdp.ErrorNotReady))
		}
	default:
		resp = linuxFrame(p.route, seq, linuxErrorResponse, uint32(xdp.ErrorNotReady))
	}
	go func() { // the response arrives later, as over the cable
		pk, err := ctl.Decode(ctl.TypeXDomainResponse, resp)
		if err == nil {
			p.host.HandlePacket(pk.(*ctl.Raw))
		}
	}()
}

// request sends a Linux request and maps the answer as Linux's requester
// does (tb_xdp_handle_error, then the status checks): the response
// dwords after the header, or an errno.
func (p *linuxPeer) request(seq uint8, typ uint32, wantType uint32, payload ...uint32) ([]uint32, error) {
	f := exchange(p.t, p.host, p.c, linuxFrame(p.route, seq, typ, payload...))
	if f == nil {
		return nil, syscall.ETIMEDOUT
	}
	w := words(p.t, f)
	switch w[7] {
	case linuxErrorResponse:
		switch xdp.ErrorCode(w[8]) {
		case xdp.ErrorUnknownPacket, xdp.ErrorUnknownDomain:
			return nil, syscall.EIO
		case xdp.ErrorNotSupported:
			return nil, p.notSupported
		case xdp.ErrorNotReady:
			return nil, syscall.EAGAIN
		}
		return make([]uint32, 2), nil // ERROR_SUCCESS reads as a zeroed response
	case wantType:
		return w[8:], nil
	}
	return nil, syscall.EIO
}

func (p *linuxPeer) enter(s string) {
	p.mu.Lock()
	p.state = s
	p.states = append(p.states, s)
	p.mu.Unlock()
}

// linkStatus is tb_xdomain_get_link_status: nil to go on bonding, errRetry
// to run the state again, any other error to skip to PROPERTIES.
var errRetry = errors.New("retry state")

func (p *linuxPeer) linkStatus(retries *int) error {
	p.linkStatusSent++
	w, err := p.request(uint8(*retries%4), linuxLinkStateStatusRequest, linuxLinkStateStatusResponse)
	if err == nil && w[0] != 0 {
		err = syscall.EREMOTEIO
	}
	if err != nil {
		if err != syscall.EOPNOTSUPP && *retries > 0 {
			*retries--
			return errRetry
		}
		return err
	}
	if slw := uint8(w[1]); slw < xdp.SupportedWidthDual {
		return syscall.EOPNOTSUPP // "remote adapter is single lane only"
	}
	return nil
}

// run drives the state machine from UUID to ENUMERATED.
func (p *linuxPeer) run() {
	const xdomainRetries = 10
	retries := xdomainRetries
	state := "UUID"
	for steps := 0; steps < 100; steps++ {
		p.enter(state)
		retry := false
		switch state {
		case "UUID":
			w, err := p.request(uint8(retries%4), linuxUUIDRequest, linuxUUIDResponse)
			if err != nil {
				retry = true
				break
			}
			p.remote = xdp.UUIDFromWords(w[0:4])
			state, retries = "LINK_STATUS", xdomainRetries // bonding_possible
		case "LINK_STATUS", "LINK_STATUS2":
			err := p.linkStatus(&retries)
			switch {
			case err == errRetry:
				retry = true
			case err != nil:
				state, retries = "PROPERTIES", xdomainRetries
			case state == "LINK_STATUS2":
				state, retries = "BONDING_UUID_LOW", xdomainRetries
			case compareUUID(p.local, p.remote) > 0: // tb_xdomain_queue_bonding
				state, retries = "BONDING_UUID_HIGH", xdomainRetries
			default:
				state, retries = "LINK_STATE_CHANGE", xdomainRetries
			}
		case "LINK_STATE_CHANGE":
			p.linkChangeSent++
			w, err := p.request(uint8(retries%4), linuxLinkStateChangeRequest, linuxLinkStateChangeResponse, uint32(xdp.TargetWidthDual)|uint32(xdp.TargetSpeedGen3)<<8)
			if err == nil && w[0] != 0 {
				err = syscall.EREMOTEIO
			}
			switch {
			case err != nil && err != syscall.EOPNOTSUPP && retries > 0:
				retries--
				retry = true
			case err != nil:
				state, retries = "PROPERTIES", xdomainRetries
			default:
				state, retries = "LINK_STATUS2", xdomainRetries
			}
		case "BONDING_UUID_LOW":
			state, retries = "PROPERTIES", xdomainRetries
		case "BONDING_UUID_HIGH":
			p.bondingUUIDHighIn++
			p.mu.Lock()
			tlw := p.targetLinkWidth
			p.mu.Unlock()
			switch {
			case tlw == xdp.TargetWidthSingle || tlw == xdp.TargetWidthDual:
				state, retries = "PROPERTIES", xdomainRetries
			case retries > 0: // "link state change request not received yet"
				retries--
				retry = true
			default: // -ETIMEDOUT, then PROPERTIES anyway
				state, retries = "PROPERTIES", xdomainRetries
			}
		case "PROPERTIES":
			props := append(append(uuidWords(p.local), uuidWords(p.remote)...), 0)
			if _, err := p.request(uint8(retries%4), linuxPropertiesRequest, linuxPropertiesResponse, props...); err != nil {
				retry = true
				retries--
				break
			}
			p.enter("ENUMERATED")
			return
		}
		if retry {
			p.retries++
		}
	}
	p.t.Fatalf("state machine did not end: %v", p.states)
}

func compareUUID(a, b xdp.UUID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// TestLinuxPeerSkipsBondingEitherUUIDOrder: a Linux peer that could bond
// (dual-lane port, software CM) reaches PROPERTIES straight after one
// LINK_STATE_STATUS exchange, with no retry and no wait in
// BONDING_UUID_HIGH, whether its UUID is above ours or below, and whichever
// errno its tree maps NOT_SUPPORTED to.
func TestLinuxPeerSkipsBondingEitherUUIDOrder(t *testing.T) {
	higher := xdp.MustParseUUID("ffffffff-0000-4000-8000-000000000009") // memcmp > uuid1
	lower := xdp.MustParseUUID("00000000-0000-4000-8000-000000000009")  // memcmp < uuid1
	for _, tc := range []struct {
		name  string
		local xdp.UUID
		errno syscall.Errno
	}{
		{"peer UUID higher, ENOTSUPP tree", higher, errENOTSUPP},
		{"peer UUID lower, ENOTSUPP tree", lower, errENOTSUPP},
		{"peer UUID higher, EOPNOTSUPP tree", higher, syscall.EOPNOTSUPP},
		{"peer UUID lower, EOPNOTSUPP tree", lower, syscall.EOPNOTSUPP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, c := linkHost(t, Link{})
			_, err := h.Connect(0x1, 19)
			require.NoError(t, err)
			p := newLinuxPeer(t, h, c, 0x1, tc.local, tc.errno)
			p.run()
			require.Equal(t, []string{"UUID", "LINK_STATUS", "PROPERTIES", "ENUMERATED"}, p.states)
			require.Zero(t, p.retries, "no state ran twice")
			require.Equal(t, 1, p.linkStatusSent)
			require.Zero(t, p.bondingUUIDHighIn)
			require.Zero(t, p.linkChangeSent)
		})
	}
}

// TestLinuxPeerStallsWhenBondingIsInvited is the same peer against answers
// that invite bonding: claiming a dual-lane adapter leaves the peer
// retrying ten times, in BONDING_UUID_HIGH (our UUID lower: we never send
// CHANGE) or on LINK_STATE_CHANGE (ours higher: we answer NOT_READY). It
// shows that the test above can fail.
func TestLinuxPeerStallsWhenBondingIsInvited(t *testing.T) {
	dual := Link{SupportedWidth: xdp.SupportedWidthDual, TargetWidth: xdp.TargetWidthSingle, SupportedSpeed: 0xc, TargetSpeed: xdp.TargetSpeedGen3}
	higher := xdp.MustParseUUID("ffffffff-0000-4000-8000-000000000009")
	lower := xdp.MustParseUUID("00000000-0000-4000-8000-000000000009")

	for _, tc := range []struct {
		name  string
		local xdp.UUID
		state string
	}{
		{"peer UUID higher", higher, "BONDING_UUID_HIGH"},
		{"peer UUID lower", lower, "LINK_STATE_CHANGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, c := linkHost(t, dual)
			_, err := h.Connect(0x1, 19)
			require.NoError(t, err)
			p := newLinuxPeer(t, h, c, 0x1, tc.local, errENOTSUPP)
			p.run()
			require.Equal(t, 10, p.retries)
			require.Contains(t, p.states, tc.state)
			require.Equal(t, "ENUMERATED", p.states[len(p.states)-1])
		})
	}

}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// FuzzHandlePacket feeds a host arbitrary control frames from a known and
// an unknown route: whatever arrives, it answers or drops, never panics,
// and every answer is a well-formed XDP response.
func FuzzHandlePacket(f *testing.F) {
	f.Add(uint8(0), linuxFrame(0x1, 2, linuxLinkStateStatusRequest))
	f.Add(uint8(1), linuxFrame(0x7, 1, linuxLinkStateChangeRequest, 0x3))
	f.Add(uint8(0), linuxFrame(0x1, 0, linuxUUIDRequest))
	f.Add(uint8(1), linuxFrame(0x7, 3, linuxPropertiesRequest, make([]uint32, 9)...))
	f.Add(uint8(1), linuxFrame(0x7, 3, linuxPropertiesChangedReq, make([]uint32, 4)...))
	c := newCapture()
	h := NewHost(HostConfig{UUID: uuid1, Name: "fuzz", Timing: fastTiming, Logger: quietLog()}, c)
	f.Cleanup(h.Close)
	if _, err := h.Connect(0x1, 19); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, kind uint8, frame []byte) {
		if len(frame) >= 8 && kind&2 != 0 {
			// Put the frame at the unknown route, CRC recomputed.
			body := append([]byte(nil), frame[:len(frame)&^3]...)
			if len(body) >= 8 {
				binary.BigEndian.PutUint32(body[4:], 0x7)
				if len(body) > 8 {
					body = binary.BigEndian.AppendUint32(body[:len(body)-4], ctl.CRC(body[:len(body)-4]))
				}
				frame = body
			}
		}
		typ := ctl.TypeXDomainRequest
		if kind&1 != 0 {
			typ = ctl.TypeXDomainResponse
		}
		p, err := ctl.Decode(typ, frame)
		if err != nil {
			return
		}
		for len(c.responses) > 0 {
			<-c.responses
		}
		h.HandlePacket(p.(*ctl.Raw))
		for len(c.responses) > 0 {
			resp, err := ctl.Decode(ctl.TypeXDomainResponse, <-c.responses)
			if err != nil {
				t.Fatalf("answer does not decode: %v", err)
			}
			if _, err := xdp.Decode(resp.(*ctl.Raw)); err != nil {
				t.Fatalf("answer is not a valid XDP message: %v", err)
			}
		}
	})
}
