// Package xdp is the wire format of the XDomain discovery protocol (XDP):
// the messages two host routers exchange over the control channel to learn
// each other's UUID, read each other's property blocks page by page and
// announce changes (§4 of the kernel reference).
//
// XDP messages travel as control packets of type XDOMAIN_REQ and
// XDOMAIN_RESP. A message's body starts with the control header (the route
// to the peer), then length_sn (the length in dwords after the first three,
// and a 2-bit sequence number), the protocol UUID and the message type. UUIDs
// cross the wire with Linux's dword byte-order quirk (see UUID.Words).
//
// The package is pure: it encodes, decodes and validates. Sending, matching
// responses and retrying belong to the discovery state machine in package
// xdomain; the property-block format lives in package xdomain/property.
package xdp

import (
	"errors"
	"fmt"
	"strconv"

	"tbstream/nhi/ctl"
)

// MessageType is the type dword of an XDP message (enum tb_xdp_type).
type MessageType uint32

// XDP message types.
const (
	TypeUUIDRequestOld            MessageType = 1
	TypeUUIDResponse              MessageType = 2
	TypePropertiesRequest         MessageType = 3
	TypePropertiesResponse        MessageType = 4
	TypePropertiesChangedRequest  MessageType = 5
	TypePropertiesChangedResponse MessageType = 6
	TypeErrorResponse             MessageType = 7
	TypeUUIDRequest               MessageType = 12
	TypeLinkStateStatusRequest    MessageType = 15
	TypeLinkStateStatusResponse   MessageType = 16
	TypeLinkStateChangeRequest    MessageType = 17
	TypeLinkStateChangeResponse   MessageType = 18
)

var messageNames = map[MessageType]string{
	TypeUUIDRequestOld: "UUID_REQUEST_OLD", TypeUUIDResponse: "UUID_RESPONSE",
	TypePropertiesRequest: "PROPERTIES_REQUEST", TypePropertiesResponse: "PROPERTIES_RESPONSE",
	TypePropertiesChangedRequest:  "PROPERTIES_CHANGED_REQUEST",
	TypePropertiesChangedResponse: "PROPERTIES_CHANGED_RESPONSE",
	TypeErrorResponse:             "ERROR_RESPONSE", TypeUUIDRequest: "UUID_REQUEST",
	TypeLinkStateStatusRequest: "LINK_STATE_STATUS_REQUEST", TypeLinkStateStatusResponse: "LINK_STATE_STATUS_RESPONSE",
	TypeLinkStateChangeRequest: "LINK_STATE_CHANGE_REQUEST", TypeLinkStateChangeResponse: "LINK_STATE_CHANGE_RESPONSE",
}

func (t MessageType) String() string {
	if s, ok := messageNames[t]; ok {
		return s
	}
	return "XDP_TYPE_" + strconv.FormatUint(uint64(t), 10)
}

// ErrorCode is the payload of an ERROR_RESPONSE (enum tb_xdp_error).
type ErrorCode uint32

// XDP error codes.
const (
	ErrorSuccess       ErrorCode = 0
	ErrorUnknownPacket ErrorCode = 1
	ErrorUnknownDomain ErrorCode = 2
	ErrorNotSupported  ErrorCode = 3
	ErrorNotReady      ErrorCode = 4
)

func (c ErrorCode) String() string {
	switch c {
	case ErrorSuccess:
		return "SUCCESS"
	case ErrorUnknownPacket:
		return "UNKNOWN_PACKET"
	case ErrorUnknownDomain:
		return "UNKNOWN_DOMAIN"
	case ErrorNotSupported:
		return "NOT_SUPPORTED"
	case ErrorNotReady:
		return "NOT_READY"
	}
	return "XDP_ERROR_" + strconv.FormatUint(uint64(c), 10)
}

// Protocol limits.
const (
	// HeaderWords is the size of the common header (struct tb_xdp_header):
	// route (2), length_sn (1), protocol UUID (4), type (1).
	HeaderWords = 8
	// lengthExcluded is how many leading dwords length_sn does not count.
	lengthExcluded = 3
	// MinLength is the smallest valid length_sn length (a bare header).
	MinLength = HeaderWords - lengthExcluded
	// MaxPropertiesData is TB_XDP_PROPERTIES_MAX_DATA_LENGTH, the most
	// property dwords one PROPERTIES_RESPONSE carries: (256-4-72)/4.
	MaxPropertiesData = 45
	// MaxPropertiesLength is TB_XDP_PROPERTIES_MAX_LENGTH, the largest
	// property block accepted, in dwords.
	MaxPropertiesLength = 500
	// MaxSeq is the largest sequence number (2 bits).
	MaxSeq = 3
)

const (
	lengthMask = 0x3f
	seqShift   = 27
	seqMask    = 3
)

// Errors. Test with errors.Is.
var (
	ErrLength   = errors.New("xdp message length invalid for its type")
	ErrProtocol = errors.New("not an XDomain discovery message")
	ErrType     = errors.New("unknown xdp message type")
	ErrPDF      = errors.New("xdp message carried in the wrong packet type")
)

// Header is the part of struct tb_xdp_header that every message has.
// The type dword is implied by the message's Go type.
type Header struct {
	// Route is the route from the sender to the peer (bit 63 masked).
	Route ctl.Route
	// Seq is the 2-bit sequence number, the retry index modulo 4.
	Seq uint8
}

// Message is an XDP message. The concrete types are the pointer types of
// this package; each knows its MessageType and packet type.
type Message interface {
	MessageType() MessageType
	// XDPHeader returns the common header (promoted from Header).
	XDPHeader() Header
	appendPayload(dst []uint32) ([]uint32, error)
}

// XDPHeader returns h; every message embeds Header.
func (h Header) XDPHeader() Header { return h }

// UUIDRequest asks the peer for its UUID (UUID_REQUEST, or the older
// UUID_REQUEST_OLD that Linux still answers).
type UUIDRequest struct {
	Header
	Old bool
}

// UUIDResponse carries the responder's UUID and its route back toward the
// requester.
type UUIDResponse struct {
	Header
	UUID     UUID
	SrcRoute ctl.Route
}

// PropertiesRequest asks for the property block page at Offset.
type PropertiesRequest struct {
	Header
	Src, Dst UUID
	Offset   uint16
}

// PropertiesResponse carries up to MaxPropertiesData dwords of the block
// starting at Offset; DataLength is the whole block's length in dwords.
type PropertiesResponse struct {
	Header
	Src, Dst   UUID
	Offset     uint16
	DataLength uint16
	Generation uint32
	Data       []uint32
}

// PropertiesChangedRequest tells the peer that our block changed.
type PropertiesChangedRequest struct {
	Header
	Src UUID
}

// PropertiesChangedResponse acknowledges a PropertiesChangedRequest.
type PropertiesChangedResponse struct {
	Header
}

// ErrorResponse answers a request that cannot be served.
type ErrorResponse struct {
	Header
	Error ErrorCode
}

// LinkStateStatusRequest asks for the peer's lane state (bonding).
type LinkStateStatusRequest struct {
	Header
}

// LinkStateStatusResponse reports supported and target link widths and
// speeds.
type LinkStateStatusResponse struct {
	Header
	Status             uint32
	SLW, TLW, SLS, TLS uint8
}

// Field values of LINK_STATE messages. They are the lane adapter's
// register fields (tb_regs.h): SLW is LANE_ADP_CS_0's supported link width
// (a bitmask), SLS its supported link speeds, TLW and TLS LANE_ADP_CS_1's
// target link width and speed.
const (
	SupportedWidthSingle uint8 = 0x1 // one lane only
	SupportedWidthDual   uint8 = 0x2 // LANE_ADP_CS_0_SUPPORTED_WIDTH_DUAL; Linux bonds only when SLW ≥ this
	TargetWidthSingle    uint8 = 0x1 // LANE_ADP_CS_1_TARGET_WIDTH_SINGLE
	TargetWidthDual      uint8 = 0x3 // LANE_ADP_CS_1_TARGET_WIDTH_DUAL
	TargetSpeedGen3      uint8 = 0xc // LANE_ADP_CS_1_TARGET_SPEED_GEN3
)

// LinkStateChangeRequest asks the peer to change lane width and speed.
type LinkStateChangeRequest struct {
	Header
	TLW, TLS uint8
}

// LinkStateChangeResponse reports the result of a LinkStateChangeRequest.
type LinkStateChangeResponse struct {
	Header
	Status uint32
}

func (m *UUIDRequest) MessageType() MessageType {
	if m.Old {
		return TypeUUIDRequestOld
	}
	return TypeUUIDRequest
}
func (m *UUIDResponse) MessageType() MessageType      { return TypeUUIDResponse }
func (m *PropertiesRequest) MessageType() MessageType { return TypePropertiesRequest }
func (m *PropertiesResponse) MessageType() MessageType {
	return TypePropertiesResponse
}
func (m *PropertiesChangedRequest) MessageType() MessageType {
	return TypePropertiesChangedRequest
}
func (m *PropertiesChangedResponse) MessageType() MessageType {
	return TypePropertiesChangedResponse
}
func (m *ErrorResponse) MessageType() MessageType          { return TypeErrorResponse }
func (m *LinkStateStatusRequest) MessageType() MessageType { return TypeLinkStateStatusRequest }
func (m *LinkStateStatusResponse) MessageType() MessageType {
	return TypeLinkStateStatusResponse
}
func (m *LinkStateChangeRequest) MessageType() MessageType { return TypeLinkStateChangeRequest }
func (m *LinkStateChangeResponse) MessageType() MessageType {
	return TypeLinkStateChangeResponse
}

// IsRequest reports whether t is sent as XDOMAIN_REQ (true) or
// XDOMAIN_RESP (false).
func (t MessageType) IsRequest() bool {
	switch t {
	case TypeUUIDRequestOld, TypeUUIDRequest, TypePropertiesRequest,
		TypePropertiesChangedRequest, TypeLinkStateStatusRequest, TypeLinkStateChangeRequest:
		return true
	}
	return false
}

func appendUUID(dst []uint32, u UUID) []uint32 {
	w := u.Words()
	return append(dst, w[:]...)
}

func (m *UUIDRequest) appendPayload(dst []uint32) ([]uint32, error) { return dst, nil }

func (m *UUIDResponse) appendPayload(dst []uint32) ([]uint32, error) {
	if !m.SrcRoute.Valid() {
		return dst, fmt.Errorf("uuid response source route %#x: %w", uint64(m.SrcRoute), ctl.ErrRoute)
	}
	dst = appendUUID(dst, m.UUID)
	return append(dst, uint32(m.SrcRoute>>32), uint32(m.SrcRoute)), nil
}

func (m *PropertiesRequest) appendPayload(dst []uint32) ([]uint32, error) {
	dst = appendUUID(dst, m.Src)
	dst = appendUUID(dst, m.Dst)
	return append(dst, uint32(m.Offset)), nil
}

func (m *PropertiesResponse) appendPayload(dst []uint32) ([]uint32, error) {
	if len(m.Data) > MaxPropertiesData {
		return dst, fmt.Errorf("properties response with %d dwords: %w", len(m.Data), ErrLength)
	}
	dst = appendUUID(dst, m.Src)
	dst = appendUUID(dst, m.Dst)
	dst = append(dst, uint32(m.Offset)|uint32(m.DataLength)<<16, m.Generation)
	return append(dst, m.Data...), nil
}

func (m *PropertiesChangedRequest) appendPayload(dst []uint32) ([]uint32, error) {
	return appendUUID(dst, m.Src), nil
}

func (m *PropertiesChangedResponse) appendPayload(dst []uint32) ([]uint32, error) {
	return dst, nil
}

func (m *ErrorResponse) appendPayload(dst []uint32) ([]uint32, error) {
	return append(dst, uint32(m.Error)), nil
}

func (m *LinkStateStatusRequest) appendPayload(dst []uint32) ([]uint32, error) { return dst, nil }

func (m *LinkStateStatusResponse) appendPayload(dst []uint32) ([]uint32, error) {
	return append(dst, m.Status, uint32(m.SLW)|uint32(m.TLW)<<8|uint32(m.SLS)<<16|uint32(m.TLS)<<24), nil
}

func (m *LinkStateChangeRequest) appendPayload(dst []uint32) ([]uint32, error) {
	return append(dst, uint32(m.TLW)|uint32(m.TLS)<<8), nil
}

func (m *LinkStateChangeResponse) appendPayload(dst []uint32) ([]uint32, error) {
	return append(dst, m.Status), nil
}

// Encode returns m as a control packet ready for ctl.Encode: XDOMAIN_REQ
// for requests, XDOMAIN_RESP for responses.
func Encode(m Message) (*ctl.Raw, error) {
	return EncodeProtocol(m, ProtocolUUID)
}

// EncodeProtocol is Encode with another protocol UUID in the header; the
// XDP layouts are shared by tests and by protocols built the same way.
func EncodeProtocol(m Message, protocol UUID) (*ctl.Raw, error) {
	h := m.XDPHeader()
	if h.Seq > MaxSeq {
		return nil, fmt.Errorf("encode %v: sequence number %d: %w", m.MessageType(), h.Seq, ErrLength)
	}
	// body without the two route dwords, which ctl.Raw holds in its header
	body := make([]uint32, HeaderWords-ctl.HeaderWords, ctl.MaxBodyWords)
	u := protocol.Words()
	copy(body[1:5], u[:])
	body[5] = uint32(m.MessageType())
	body, err := m.appendPayload(body)
	if err != nil {
		return nil, fmt.Errorf("encode %v: %w", m.MessageType(), err)
	}
	if len(body)+ctl.HeaderWords > ctl.MaxBodyWords {
		return nil, fmt.Errorf("encode %v of %d dwords: %w", m.MessageType(), len(body)+ctl.HeaderWords, ctl.ErrTooLong)
	}
	body[0] = uint32(len(body)+ctl.HeaderWords-lengthExcluded)&lengthMask | uint32(h.Seq)<<seqShift
	kind := ctl.TypeXDomainResponse
	if m.MessageType().IsRequest() {
		kind = ctl.TypeXDomainRequest
	}
	return &ctl.Raw{Header: ctl.Header{Route: h.Route}, Kind: kind, Body: body}, nil
}

// Envelope is what every XDomain packet's header says, whatever its
// protocol: enough to dispatch it and to match a response to a request.
type Envelope struct {
	Header
	Protocol UUID
	Type     MessageType
	// Payload is the body after the type dword.
	Payload []uint32
}

// Open checks the length rules every XDomain packet must satisfy (length_sn
// equals the body's size minus three dwords and is at least 5) and splits
// the header from the payload.
func Open(p *ctl.Raw) (Envelope, error) {
	if p.Kind != ctl.TypeXDomainRequest && p.Kind != ctl.TypeXDomainResponse {
		return Envelope{}, fmt.Errorf("open %v packet: %w", p.Kind, ErrPDF)
	}
	body := p.Body
	if len(body) < HeaderWords-ctl.HeaderWords {
		return Envelope{}, fmt.Errorf("xdomain packet of %d dwords: %w", len(body)+ctl.HeaderWords, ErrLength)
	}
	length := int(body[0] & lengthMask)
	if length != len(body)+ctl.HeaderWords-lengthExcluded || length < MinLength {
		return Envelope{}, fmt.Errorf("xdomain length field %d for %d dwords: %w", length, len(body)+ctl.HeaderWords, ErrLength)
	}
	return Envelope{
		Header:   Header{Route: p.Route, Seq: uint8(body[0] >> seqShift & seqMask)},
		Protocol: UUIDFromWords(body[1:5]),
		Type:     MessageType(body[5]),
		Payload:  body[6:],
	}, nil
}

// Decode checks and decodes an XDP message. Packets of other protocols are
// ErrProtocol (dispatch them with Open); unknown XDP types are ErrType, to
// be answered with ERROR_RESPONSE NOT_SUPPORTED.
func Decode(p *ctl.Raw) (Message, error) {
	env, err := Open(p)
	if err != nil {
		return nil, err
	}
	if env.Protocol != ProtocolUUID {
		return nil, fmt.Errorf("protocol %v: %w", env.Protocol, ErrProtocol)
	}
	if want := env.Type.IsRequest(); want != (p.Kind == ctl.TypeXDomainRequest) {
		if _, known := messageNames[env.Type]; known {
			return nil, fmt.Errorf("%v sent as %v: %w", env.Type, p.Kind, ErrPDF)
		}
	}
	return decodePayload(env)
}

func decodePayload(env Envelope) (Message, error) {
	pl := env.Payload
	size := func(n int) error {
		if len(pl) != n {
			return fmt.Errorf("%v with %d payload dwords, want %d: %w", env.Type, len(pl), n, ErrLength)
		}
		return nil
	}
	h := env.Header
	switch env.Type {
	case TypeUUIDRequestOld, TypeUUIDRequest:
		if err := size(0); err != nil {
			return nil, err
		}
		return &UUIDRequest{Header: h, Old: env.Type == TypeUUIDRequestOld}, nil
	case TypeUUIDResponse:
		if err := size(6); err != nil {
			return nil, err
		}
		route := (ctl.Route(pl[4])<<32 | ctl.Route(pl[5])) &^ (1 << 63)
		if !route.Valid() {
			return nil, fmt.Errorf("uuid response source route %#x: %w", uint64(route), ctl.ErrRoute)
		}
		return &UUIDResponse{Header: h, UUID: UUIDFromWords(pl[0:4]), SrcRoute: route}, nil
	case TypePropertiesRequest:
		if err := size(9); err != nil {
			return nil, err
		}
		return &PropertiesRequest{Header: h, Src: UUIDFromWords(pl[0:4]), Dst: UUIDFromWords(pl[4:8]), Offset: uint16(pl[8])}, nil
	case TypePropertiesResponse:
		if len(pl) < 10 || len(pl)-10 > MaxPropertiesData {
			return nil, fmt.Errorf("%v with %d payload dwords: %w", env.Type, len(pl), ErrLength)
		}
		return &PropertiesResponse{
			Header: h, Src: UUIDFromWords(pl[0:4]), Dst: UUIDFromWords(pl[4:8]),
			Offset: uint16(pl[8]), DataLength: uint16(pl[8] >> 16), Generation: pl[9],
			Data: pl[10:],
		}, nil
	case TypePropertiesChangedRequest:
		if err := size(4); err != nil {
			return nil, err
		}
		return &PropertiesChangedRequest{Header: h, Src: UUIDFromWords(pl[0:4])}, nil
	case TypePropertiesChangedResponse:
		if err := size(0); err != nil {
			return nil, err
		}
		return &PropertiesChangedResponse{Header: h}, nil
	case TypeErrorResponse:
		if err := size(1); err != nil {
			return nil, err
		}
		return &ErrorResponse{Header: h, Error: ErrorCode(pl[0])}, nil
	case TypeLinkStateStatusRequest:
		if err := size(0); err != nil {
			return nil, err
		}
		return &LinkStateStatusRequest{Header: h}, nil
	case TypeLinkStateStatusResponse:
		if err := size(2); err != nil {
			return nil, err
		}
		w := pl[1]
		return &LinkStateStatusResponse{Header: h, Status: pl[0], SLW: uint8(w), TLW: uint8(w >> 8), SLS: uint8(w >> 16), TLS: uint8(w >> 24)}, nil
	case TypeLinkStateChangeRequest:
		if err := size(1); err != nil {
			return nil, err
		}
		return &LinkStateChangeRequest{Header: h, TLW: uint8(pl[0]), TLS: uint8(pl[0] >> 8)}, nil
	case TypeLinkStateChangeResponse:
		if err := size(1); err != nil {
			return nil, err
		}
		return &LinkStateChangeResponse{Header: h, Status: pl[0]}, nil
	}
	return nil, fmt.Errorf("xdp type %d: %w", uint32(env.Type), ErrType)
}
