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

// parseGroupName parses a group directory name. The kernel's sscanf("%u-%llx.%u") would
// take names such as "+0-1.0" or "0-1.0junk" that can never equal a device name; like the
// reference's recommended ^\d+-[0-9a-fA-F]+\.\d+$, this takes only decimal digits, a dash,
// hex digits, a dot and decimal digits, each number within its C type. Anything else is
// EINVAL, the errno mkdir reports.
func parseGroupName(name string) (GroupName, error) {
	domain, rest, ok1 := strings.Cut(name, "-")
	route, service, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !allDigits(domain, 10) || !allDigits(route, 16) || !allDigits(service, 10) {
		return GroupName{}, syscall.EINVAL
	}
	d, err1 := strconv.ParseUint(domain, 10, 32)
	r, err2 := strconv.ParseUint(route, 16, 64)
	s, err3 := strconv.ParseUint(service, 10, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return GroupName{}, syscall.EINVAL
	}
	return GroupName{Name: name, Domain: uint32(d), Route: r, Service: uint32(s)}, nil
}

// allDigits reports whether s is non-empty and made of digits of base 10 or 16 only
// (strconv alone would accept a sign or underscores).
func allDigits(s string, base int) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if d := hexDigit(s[i]); d < 0 || d >= base {
			return false
		}
	}
	return true
}
