package ctl

import (
	"fmt"
	"strconv"
)

// Type is a control packet type; on the wire it is the frame's PDF.
type Type uint8

// Control packet types (enum tb_cfg_pkg_type).
const (
	TypeRead            Type = 1
	TypeWrite           Type = 2
	TypeError           Type = 3
	TypeNotifyAck       Type = 4
	TypeEvent           Type = 5
	TypeXDomainRequest  Type = 6
	TypeXDomainResponse Type = 7
	TypeOverride        Type = 8
	TypeReset           Type = 9
	TypeICMEvent        Type = 10
	TypeICMCommand      Type = 11
	TypeICMResponse     Type = 12
	TypePrepareToSleep  Type = 13
)

var typeNames = [...]string{
	TypeRead: "READ", TypeWrite: "WRITE", TypeError: "ERROR", TypeNotifyAck: "NOTIFY_ACK",
	TypeEvent: "EVENT", TypeXDomainRequest: "XDOMAIN_REQ", TypeXDomainResponse: "XDOMAIN_RESP",
	TypeOverride: "OVERRIDE", TypeReset: "RESET", TypeICMEvent: "ICM_EVENT",
	TypeICMCommand: "ICM_CMD", TypeICMResponse: "ICM_RESP", TypePrepareToSleep: "PREPARE_TO_SLEEP",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "TYPE_" + strconv.Itoa(int(t))
}

// Route is a route string: 8 bits per depth level, byte k being the
// downstream adapter taken at depth k+1. Route 0 is the host router.
type Route uint64

// Route string limits (TB_ROUTE_SHIFT, maximum depth 6).
const (
	RouteShift    = 8
	MaxRouteDepth = 6
	// routeHiBits is the width of route_hi in a config packet header; the
	// ten bits above it are the "unknown" field.
	routeHiBits = 22
	// HeaderReply is bit 31 of route_hi ("unknown == 1<<9"), set by
	// routers on the packets they send; XDomain code masks it from routes.
	HeaderReply = 1 << 31
)

// String formats the route as the kernel names it: lower-case hex, no
// prefix, so route 0x503 prints "503".
func (r Route) String() string { return strconv.FormatUint(uint64(r), 16) }

// Depth returns how many hops the route has (0 for the host router).
func (r Route) Depth() int {
	d := 0
	for ; r != 0; r >>= RouteShift {
		d++
	}
	return d
}

// Valid reports whether r fits the maximum depth.
func (r Route) Valid() bool { return r>>(RouteShift*MaxRouteDepth) == 0 }

// ParseRoute parses the hex route of a name such as "503".
func ParseRoute(s string) (Route, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("parse route %q: %w", s, err)
	}
	r := Route(v)
	if !r.Valid() {
		return 0, fmt.Errorf("parse route %q: %w", s, ErrRoute)
	}
	return r, nil
}

// Header is the first two dwords of every control packet
// (struct tb_cfg_header): route_hi (22 bits) with the "unknown" field above
// it, then route_lo.
type Header struct {
	Route Route
	// Reply marks a packet sent by a router (bit 31 of route_hi).
	Reply bool
}

// PacketHeader returns h; every packet type embeds Header.
func (h Header) PacketHeader() Header { return h }

// HeaderWords is the size of a Header in dwords.
const HeaderWords = 2

func (h Header) appendWords(dst []uint32) []uint32 {
	hi := uint32(h.Route>>32) & (1<<routeHiBits - 1)
	if h.Reply {
		hi |= HeaderReply
	}
	return append(dst, hi, uint32(h.Route))
}

func parseHeader(body []uint32) Header {
	return Header{
		Route: Route(body[0]&(1<<routeHiBits-1))<<32 | Route(body[1]),
		Reply: body[0]&HeaderReply != 0,
	}
}

// RouteOf returns the route of any packet body (at least two dwords), with
// the reply bit masked as the kernel's XDomain code does.
func RouteOf(body []uint32) (Route, error) {
	if len(body) < HeaderWords {
		return 0, fmt.Errorf("packet of %d dwords: %w", len(body), ErrShort)
	}
	return parseHeader(body).Route, nil
}
