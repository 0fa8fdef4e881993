package xdomain

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"tbstream/nhi/ctl"
)

// ErrName reports a host or service name that does not have the kernel's
// form.
var ErrName = errors.New("not a <domain>-<route>[.<service>] name")

// HostID names a remote host as Linux names its XDomain device,
// "<domain>-<route>" with the route in lower-case hex: "0-1", "0-503".
type HostID struct {
	Domain uint32
	Route  ctl.Route
}

func (h HostID) String() string {
	return strconv.FormatUint(uint64(h.Domain), 10) + "-" + h.Route.String()
}

// ServiceID names one service of a remote host, "<host>.<index>": "0-1.0".
// The index is the service's position in the peer's property block among
// its directories, so it is not always 0.
type ServiceID struct {
	Host  HostID
	Index uint32
}

func (s ServiceID) String() string {
	return s.Host.String() + "." + strconv.FormatUint(uint64(s.Index), 10)
}

// ParseHostID parses "<domain>-<route>".
func ParseHostID(s string) (HostID, error) {
	dom, route, ok := strings.Cut(s, "-")
	if !ok {
		return HostID{}, fmt.Errorf("parse host %q: %w", s, ErrName)
	}
	d, err := parseDecimal(dom)
	if err != nil {
		return HostID{}, fmt.Errorf("parse host %q: %w", s, err)
	}
	if !isHex(route) {
		return HostID{}, fmt.Errorf("parse host %q: %w", s, ErrName)
	}
	r, err := strconv.ParseUint(route, 16, 64)
	if err != nil {
		return HostID{}, fmt.Errorf("parse host %q: route out of range: %w", s, ErrName)
	}
	return HostID{Domain: d, Route: ctl.Route(r)}, nil
}

// ParseServiceID parses "<domain>-<route>.<service>", the name of a
// configfs stream group. It accepts exactly `^[0-9]+-[0-9a-fA-F]+\.[0-9]+$`
// with each number in range, which is what Linux's sscanf("%u-%llx.%u")
// means for names a person types; sscanf itself would also take a sign, a
// "0x" prefix and trailing text, names that can never match a service.
func ParseServiceID(s string) (ServiceID, error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return ServiceID{}, fmt.Errorf("parse service %q: %w", s, ErrName)
	}
	h, err := ParseHostID(s[:i])
	if err != nil {
		return ServiceID{}, fmt.Errorf("parse service %q: %w", s, ErrName)
	}
	idx, err := parseDecimal(s[i+1:])
	if err != nil {
		return ServiceID{}, fmt.Errorf("parse service %q: %w", s, err)
	}
	return ServiceID{Host: h, Index: idx}, nil
}

func parseDecimal(s string) (uint32, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, ErrName
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q out of range: %w", s, ErrName)
	}
	return uint32(v), nil
}

func isHex(s string) bool {
	return s != "" && strings.TrimLeft(s, "0123456789abcdefABCDEF") == ""
}
