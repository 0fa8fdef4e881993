package configfs

import (
	"bytes"
	"strconv"
	"syscall"
)

// Attr names one attribute file of a stream item, <group>/<name>/<attr>.
type Attr int

// The attributes of a stream item, in the order of the kernel documentation's table.
const (
	AttrIndex      Attr = iota // X of /dev/tbstreamX; read-only, "%d\n"
	AttrInHopID                // HopID the peer transmits on; kstrtoint base 0, "%d\n"
	AttrOutHopID               // HopID we transmit on; kstrtoint base 0, "%d\n"
	AttrRingSize               // descriptors per TX and RX ring; kstrtouint, RingSizeMin..RingSizeMax, "%u\n"
	AttrThrottling             // interrupt moderation in ns; kstrtouint, 0..ThrottlingMax, "%u\n"
	AttrBusyPoll               // 7.3+: spin instead of interrupts; kstrtobool, "%u\n"
	numAttrs
)

// Limits and defaults of the stream driver's attributes (usb4stream-kernel.md §1.3).
const (
	RingSizeMin       = 32
	RingSizeMax       = 4096
	DefaultRingSize   = 256
	ThrottlingMax     = 65535 * 256 // the moderation register counts 256 ns units in 16 bits
	DefaultThrottling = 8192
	// MaxStreamName is TB_PROPERTY_KEY_SIZE: a stream's name doubles as an XDomain property key.
	MaxStreamName = 8
	// attrPageSize is configfs's SIMPLE_ATTR_SIZE: the i_size it reports, the most show() may
	// print, and one more than the most one write(2) hands to store().
	attrPageSize = 4096
)

// String returns the attribute's file name.
func (a Attr) String() string {
	switch a {
	case AttrIndex:
		return "index"
	case AttrInHopID:
		return "in_hopid"
	case AttrOutHopID:
		return "out_hopid"
	case AttrRingSize:
		return "ring_size"
	case AttrThrottling:
		return "throttling"
	case AttrBusyPoll:
		return "busy_poll"
	}
	return "attr(" + strconv.Itoa(int(a)) + ")"
}

// attrNamed returns the attribute whose file is called name.
func attrNamed(name string) (Attr, bool) {
	for a := range numAttrs {
		if a.String() == name {
			return a, true
		}
	}
	return 0, false
}

// writable reports whether the attribute has a store method (configfs mode 0644, else 0444).
func (a Attr) writable() bool { return a != AttrIndex }

// defaultMode is the permission configfs gives the attribute's file.
func (a Attr) defaultMode() uint32 {
	if a.writable() {
		return 0o644
	}
	return 0o444
}

// show prints a value as the driver's show() does: "%d\n" for the signed fields, "%u\n" of
// a 32-bit field for the others.
func (a Attr) show(v int64) []byte {
	var out []byte
	switch a {
	case AttrIndex, AttrInHopID, AttrOutHopID:
		out = strconv.AppendInt(nil, v, 10)
	default:
		out = strconv.AppendUint(nil, uint64(uint32(v)), 10)
	}
	return append(out, '\n')
}

// parse converts what one write(2) stored into the value the backend receives, with the
// driver's parse and range checks: kstrto* errors (EINVAL, ERANGE on overflow), EINVAL for
// out-of-range ring_size and throttling, EACCES for the read-only index (configfs refuses
// a write open of an attribute without store()). page is cut at its first NUL, as the
// kernel's C string would be.
func (a Attr) parse(page []byte) (int64, syscall.Errno) {
	if end := bytes.IndexByte(page, 0); end >= 0 {
		page = page[:end]
	}
	s := string(page)
	switch a {
	case AttrInHopID, AttrOutHopID:
		v, errno := kstrtoint(s)
		return int64(v), errno
	case AttrRingSize:
		v, errno := kstrtouint(s)
		if errno != 0 {
			return 0, errno
		}
		if v < RingSizeMin || v > RingSizeMax {
			return 0, syscall.EINVAL
		}
		return int64(v), 0
	case AttrThrottling:
		v, errno := kstrtouint(s)
		if errno != 0 {
			return 0, errno
		}
		if v > ThrottlingMax {
			return 0, syscall.EINVAL
		}
		return int64(v), 0
	case AttrBusyPoll:
		v, errno := kstrtobool(s)
		if v {
			return 1, errno
		}
		return 0, errno
	}
	return 0, syscall.EACCES
}
