package ctl

import "fmt"

// Packet is a decoded control packet. The concrete types are *ConfigRead,
// *ConfigWrite, *ConfigError, *Event, *Reset and, for every other type,
// *Raw.
type Packet interface {
	// Type is the packet type, sent as the frame's SOF and EOF PDF.
	Type() Type
	// PacketHeader returns the packet's header (promoted from Header).
	PacketHeader() Header
	appendBody(dst []uint32) ([]uint32, error)
}

// Raw is a packet whose body this package does not interpret: XDomain
// requests and responses, ICM traffic, NOTIFY_ACK, OVERRIDE.
type Raw struct {
	Header
	Kind Type
	Body []uint32 // the dwords after the header
}

func (p *Raw) Type() Type { return p.Kind }

func (p *Raw) appendBody(dst []uint32) ([]uint32, error) {
	return append(p.Header.appendWords(dst), p.Body...), nil
}

// AppendBody appends the packet's body dwords (header included, CRC
// excluded) to dst.
func AppendBody(dst []uint32, p Packet) ([]uint32, error) {
	if h := p.PacketHeader(); !h.Route.Valid() {
		return dst, fmt.Errorf("encode %v to route %#x: %w", p.Type(), uint64(h.Route), ErrRoute)
	}
	return p.appendBody(dst)
}

// Encode returns the whole wire frame of p, CRC included.
func Encode(p Packet) ([]byte, error) {
	body, err := AppendBody(make([]uint32, 0, MaxBodyWords), p)
	if err != nil {
		return nil, err
	}
	return AppendFrame(make([]byte, 0, 4*len(body)+CRCSize), body)
}

// Decode checks a received frame and decodes it according to its PDF.
func Decode(t Type, frame []byte) (Packet, error) {
	body, err := ParseFrame(frame)
	if err != nil {
		return nil, err
	}
	return DecodeBody(t, body)
}

// DecodeBody decodes body dwords (CRC already checked) by packet type.
func DecodeBody(t Type, body []uint32) (Packet, error) {
	if len(body) < HeaderWords {
		return nil, fmt.Errorf("%v packet of %d dwords: %w", t, len(body), ErrShort)
	}
	h := parseHeader(body)
	if !h.Route.Valid() {
		return nil, fmt.Errorf("%v packet route %#x: %w", t, uint64(h.Route), ErrRoute)
	}
	rest := body[HeaderWords:]
	fixed := func(n int) error {
		if len(rest) != n {
			return fmt.Errorf("%v packet of %d dwords, want %d: %w", t, len(body), HeaderWords+n, ErrLength)
		}
		return nil
	}
	switch t {
	case TypeRead, TypeWrite:
		if len(rest) < 1 {
			return nil, fmt.Errorf("%v packet of %d dwords: %w", t, len(body), ErrLength)
		}
		if t == TypeRead {
			return parseConfigRead(h, rest)
		}
		return parseConfigWrite(h, rest)
	case TypeError:
		if err := fixed(1); err != nil {
			return nil, err
		}
		return parseConfigError(h, rest[0]), nil
	case TypeEvent:
		if err := fixed(1); err != nil {
			return nil, err
		}
		return parseEvent(h, rest[0]), nil
	case TypeReset:
		if err := fixed(0); err != nil {
			return nil, err
		}
		return &Reset{Header: h}, nil
	}
	return &Raw{Header: h, Kind: t, Body: rest}, nil
}
