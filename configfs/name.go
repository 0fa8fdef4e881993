package configfs

import (
	"strconv"
	"strings"
	"syscall"
)

// GroupName is a parsed stream/<domain>-<route>.<service> directory name. The kernel
// attaches the group to the XDomain service whose device name equals Name, e.g. "0-1.0";
// Domain, Route and Service are the parsed numbers.
type GroupName struct {
	Name    string
	Domain  uint32
	Route   uint64
	Service uint32
}

func (g GroupName) String() string { return g.Name }

// parseGroupName takes exactly ^[0-9]+-[0-9a-fA-F]+\.[0-9]+$ with each number within its
// C type (%u, %llx, %u). The kernel's sscanf("%u-%llx.%u") would also take names such as
// "+0-1.0", "0-0x1.0" or "0-1.0junk" that can never equal a device name. Anything else is
// EINVAL, the errno mkdir reports. The package parses the name itself so that it needs no
// Thunderbolt package.
func parseGroupName(name string) (GroupName, error) {
	host, service, ok := cutLast(name, '.')
	if !ok {
		return GroupName{}, syscall.EINVAL
	}
	domain, route, ok := strings.Cut(host, "-")
	if !ok {
		return GroupName{}, syscall.EINVAL
	}
	d, okD := parseDigits(domain, "0123456789", 10, 32)
	r, okR := parseDigits(route, "0123456789abcdefABCDEF", 16, 64)
	s, okS := parseDigits(service, "0123456789", 10, 32)
	if !okD || !okR || !okS {
		return GroupName{}, syscall.EINVAL
	}
	return GroupName{Name: name, Domain: uint32(d), Route: r, Service: uint32(s)}, nil
}

func cutLast(s string, sep byte) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// parseDigits accepts a non-empty run of digits only (strconv alone would take a sign or
// a base prefix) that fits in bits.
func parseDigits(s, digits string, base, bits int) (uint64, bool) {
	if s == "" || strings.Trim(s, digits) != "" {
		return 0, false
	}
	v, err := strconv.ParseUint(s, base, bits)
	return v, err == nil
}
