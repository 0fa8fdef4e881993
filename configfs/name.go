package configfs

import (
	"syscall"

	"tbstream/xdomain"
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

// parseGroupName parses a group directory name with xdomain.ParseServiceID, which takes
// exactly ^[0-9]+-[0-9a-fA-F]+\.[0-9]+$ with each number within its C type. The kernel's
// sscanf("%u-%llx.%u") would also take names such as "+0-1.0" or "0-1.0junk" that can never
// equal a device name. Anything else is EINVAL, the errno mkdir reports.
func parseGroupName(name string) (GroupName, error) {
	id, err := xdomain.ParseServiceID(name)
	if err != nil {
		return GroupName{}, syscall.EINVAL
	}
	return GroupName{Name: name, Domain: id.Host.Domain, Route: uint64(id.Host.Route), Service: id.Index}, nil
}
