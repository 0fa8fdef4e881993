package ctl

import (
	"fmt"
	"strconv"
)

// ConfigSpace selects which configuration space a READ or WRITE addresses.
type ConfigSpace uint8

// Configuration spaces (enum tb_cfg_space).
const (
	SpacePath     ConfigSpace = 0 // TB_CFG_HOPS: path entries, 2 dwords per HopID
	SpaceAdapter  ConfigSpace = 1 // TB_CFG_PORT
	SpaceRouter   ConfigSpace = 2 // TB_CFG_SWITCH
	SpaceCounters ConfigSpace = 3 // TB_CFG_COUNTERS
)

func (s ConfigSpace) String() string {
	switch s {
	case SpacePath:
		return "path"
	case SpaceAdapter:
		return "adapter"
	case SpaceRouter:
		return "router"
	case SpaceCounters:
		return "counters"
	}
	return "space" + strconv.Itoa(int(s))
}

// MaxConfigWords is the largest READ or WRITE (TB_MAX_CONFIG_RW_LENGTH):
// three dwords of header and address plus 60 of data fill a 252-byte body.
const MaxConfigWords = 60

// Address is the third dword of READ and WRITE packets (struct
// tb_cfg_address): offset:13, length:6, port:6, space:2, seq:2, zero:3,
// LSB first.
type Address struct {
	Offset  uint16 // in dwords, 13 bits
	Length  uint8  // in dwords, 6 bits, at most MaxConfigWords
	Adapter uint8  // 6 bits; in a READ reply the responder's upstream adapter
	Space   ConfigSpace
	Seq     uint8 // 2 bits; the retry index, matched between request and reply
}

func (a Address) word() (uint32, error) {
	if a.Offset >= 1<<13 || a.Length > MaxConfigWords || a.Adapter >= 1<<6 || a.Space > 3 || a.Seq > 3 {
		return 0, fmt.Errorf("config address %+v: field out of range: %w", a, ErrLength)
	}
	return uint32(a.Offset) | uint32(a.Length)<<13 | uint32(a.Adapter)<<19 |
		uint32(a.Space)<<25 | uint32(a.Seq)<<27, nil
}

func parseAddress(w uint32) (Address, error) {
	a := Address{
		Offset:  uint16(w & 0x1fff),
		Length:  uint8(w >> 13 & 0x3f),
		Adapter: uint8(w >> 19 & 0x3f),
		Space:   ConfigSpace(w >> 25 & 3),
		Seq:     uint8(w >> 27 & 3),
	}
	if w>>29 != 0 {
		return a, fmt.Errorf("config address %#08x: reserved bits set: %w", w, ErrLength)
	}
	if a.Length > MaxConfigWords {
		return a, fmt.Errorf("config address length %d: %w", a.Length, ErrLength)
	}
	return a, nil
}

// ConfigRead is a READ packet. A request has no Data; a response carries
// exactly Addr.Length dwords.
type ConfigRead struct {
	Header
	Addr Address
	Data []uint32
}

// ConfigWrite is a WRITE packet. A request carries Addr.Length dwords of
// Data; the response echoes the address with no data.
type ConfigWrite struct {
	Header
	Addr Address
	Data []uint32
}

// ErrorCode is the error field of an ERROR packet (enum tb_cfg_error).
type ErrorCode uint8

// Error codes of ERROR packets.
const (
	ErrorPortNotConnected   ErrorCode = 0
	ErrorLinkError          ErrorCode = 1
	ErrorInvalidConfigSpace ErrorCode = 2
	ErrorNoSuchPort         ErrorCode = 4
	ErrorAckPlugEvent       ErrorCode = 7
	ErrorLoop               ErrorCode = 8
	ErrorHECErrorDetected   ErrorCode = 12
	ErrorFlowControlError   ErrorCode = 13
	ErrorLock               ErrorCode = 15
	ErrorDPBandwidth        ErrorCode = 32
	ErrorROPCompleted       ErrorCode = 33
	ErrorPOPCompleted       ErrorCode = 34
	ErrorPCIeWake           ErrorCode = 35
	ErrorDPConnChange       ErrorCode = 36
	ErrorDPTXDiscovery      ErrorCode = 37
	ErrorLinkRecovery       ErrorCode = 38
	ErrorAsymLink           ErrorCode = 39
)

var errorNames = map[ErrorCode]string{
	ErrorPortNotConnected: "PORT_NOT_CONNECTED", ErrorLinkError: "LINK_ERROR",
	ErrorInvalidConfigSpace: "INVALID_CONFIG_SPACE", ErrorNoSuchPort: "NO_SUCH_PORT",
	ErrorAckPlugEvent: "ACK_PLUG_EVENT", ErrorLoop: "LOOP", ErrorHECErrorDetected: "HEC_ERROR_DETECTED",
	ErrorFlowControlError: "FLOW_CONTROL_ERROR", ErrorLock: "LOCK", ErrorDPBandwidth: "DP_BW",
	ErrorROPCompleted: "ROP_CMPLT", ErrorPOPCompleted: "POP_CMPLT", ErrorPCIeWake: "PCIE_WAKE",
	ErrorDPConnChange: "DP_CON_CHANGE", ErrorDPTXDiscovery: "DPTX_DISCOVERY",
	ErrorLinkRecovery: "LINK_RECOVERY", ErrorAsymLink: "ASYM_LINK",
}

func (c ErrorCode) String() string {
	if s, ok := errorNames[c]; ok {
		return s
	}
	return "ERROR_" + strconv.Itoa(int(c))
}

// Plug-event values of the ERROR packet's pg field (enum tb_cfg_pg).
const (
	PGHotPlug   uint8 = 2
	PGHotUnplug uint8 = 3
)

// ConfigError is an ERROR packet: error:8, port:6, reserved:16, pg:2.
// An ERROR with Code ErrorAckPlugEvent acknowledges a hot-plug EVENT.
type ConfigError struct {
	Header
	Code    ErrorCode
	Adapter uint8
	PG      uint8
}

// Event is a hot-plug EVENT packet: port:6, zero:25, unplug:1.
type Event struct {
	Header
	Adapter uint8
	Unplug  bool
}

// Reset is a RESET packet: the header alone.
type Reset struct {
	Header
}

func (p *ConfigRead) Type() Type  { return TypeRead }
func (p *ConfigWrite) Type() Type { return TypeWrite }
func (p *ConfigError) Type() Type { return TypeError }
func (p *Event) Type() Type       { return TypeEvent }
func (p *Reset) Type() Type       { return TypeReset }

func (p *ConfigRead) appendBody(dst []uint32) ([]uint32, error) {
	if p.Data != nil && len(p.Data) != int(p.Addr.Length) {
		return dst, fmt.Errorf("READ response with %d dwords for length %d: %w", len(p.Data), p.Addr.Length, ErrLength)
	}
	return appendAddressed(dst, p.Header, p.Addr, p.Data)
}

func (p *ConfigWrite) appendBody(dst []uint32) ([]uint32, error) {
	if p.Data != nil && len(p.Data) != int(p.Addr.Length) {
		return dst, fmt.Errorf("WRITE request with %d dwords for length %d: %w", len(p.Data), p.Addr.Length, ErrLength)
	}
	return appendAddressed(dst, p.Header, p.Addr, p.Data)
}

func appendAddressed(dst []uint32, h Header, a Address, data []uint32) ([]uint32, error) {
	w, err := a.word()
	if err != nil {
		return dst, err
	}
	dst = h.appendWords(dst)
	dst = append(dst, w)
	return append(dst, data...), nil
}

func (p *ConfigError) appendBody(dst []uint32) ([]uint32, error) {
	if p.Adapter >= 1<<6 || p.PG > 3 {
		return dst, fmt.Errorf("ERROR packet %+v: field out of range: %w", *p, ErrLength)
	}
	return append(p.Header.appendWords(dst), uint32(p.Code)|uint32(p.Adapter)<<8|uint32(p.PG)<<30), nil
}

func (p *Event) appendBody(dst []uint32) ([]uint32, error) {
	if p.Adapter >= 1<<6 {
		return dst, fmt.Errorf("EVENT adapter %d: %w", p.Adapter, ErrLength)
	}
	w := uint32(p.Adapter)
	if p.Unplug {
		w |= 1 << 31
	}
	return append(p.Header.appendWords(dst), w), nil
}

func (p *Reset) appendBody(dst []uint32) ([]uint32, error) {
	return p.Header.appendWords(dst), nil
}

func parseConfigRead(h Header, body []uint32) (*ConfigRead, error) {
	a, err := parseAddress(body[0])
	if err != nil {
		return nil, err
	}
	p := &ConfigRead{Header: h, Addr: a}
	switch rest := body[1:]; {
	case len(rest) == 0:
	case len(rest) == int(a.Length):
		p.Data = rest
	default:
		return nil, fmt.Errorf("READ of length %d with %d data dwords: %w", a.Length, len(rest), ErrLength)
	}
	return p, nil
}

func parseConfigWrite(h Header, body []uint32) (*ConfigWrite, error) {
	a, err := parseAddress(body[0])
	if err != nil {
		return nil, err
	}
	p := &ConfigWrite{Header: h, Addr: a}
	switch rest := body[1:]; {
	case len(rest) == 0:
	case len(rest) == int(a.Length):
		p.Data = rest
	default:
		return nil, fmt.Errorf("WRITE of length %d with %d data dwords: %w", a.Length, len(rest), ErrLength)
	}
	return p, nil
}

func parseConfigError(h Header, w uint32) *ConfigError {
	return &ConfigError{Header: h, Code: ErrorCode(w), Adapter: uint8(w >> 8 & 0x3f), PG: uint8(w >> 30)}
}

func parseEvent(h Header, w uint32) *Event {
	return &Event{Header: h, Adapter: uint8(w & 0x3f), Unplug: w>>31 != 0}
}
