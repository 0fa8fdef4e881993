package usbcable

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The interface both ends agree on (USB 2.0 §9.6.5): one vendor-specific
// interface, number 0, alternate setting 0, in configuration 1, with one
// bulk IN and one bulk OUT endpoint.
const (
	ConfigValue       = 1    // bConfigurationValue
	InterfaceNumber   = 0    // bInterfaceNumber
	InterfaceAlt      = 0    // bAlternateSetting
	InterfaceClass    = 0xff // bInterfaceClass: vendor specific
	InterfaceSubClass = 0x00 // bInterfaceSubClass
	InterfaceProtocol = 0x00 // bInterfaceProtocol
)

// Default IDs: the Linux Foundation's vendor ID with the product ID of
// its "Multifunction Composite Gadget", which Linux's own gadget examples
// use. Fine between two machines of one's own; a product must use a
// vendor and product ID of its own (-usb-id).
const (
	DefaultVendorID  = 0x1d6b
	DefaultProductID = 0x0104
)

// Transfer sizes (tunables).
const (
	// MaxTransfer is the largest bulk transfer a Conn writes, and the
	// size of its reads: 64 KiB, a multiple of every wMaxPacketSize (64,
	// 512, 1024) and well under usbfs's 16 MiB budget.
	MaxTransfer = 64 << 10
	// ReadsInFlight is how many transfers a host reads ahead.
	ReadsInFlight = 4
)

// ID is a USB vendor:product pair.
type ID struct{ Vendor, Product uint16 }

// DefaultID is DefaultVendorID:DefaultProductID.
var DefaultID = ID{DefaultVendorID, DefaultProductID}

func (id ID) String() string { return fmt.Sprintf("%04x:%04x", id.Vendor, id.Product) }

// ParseID parses "VID:PID", each four hex digits at most ("1d6b:0104").
func ParseID(s string) (ID, error) {
	v, p, ok := strings.Cut(s, ":")
	if !ok {
		return ID{}, fmt.Errorf("USB ID %q: want VID:PID in hex, e.g. 1d6b:0104", s)
	}
	vid, err1 := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 16)
	pid, err2 := strconv.ParseUint(strings.TrimPrefix(p, "0x"), 16, 16)
	if err1 != nil || err2 != nil || v == "" || p == "" {
		return ID{}, fmt.Errorf("USB ID %q: want VID:PID in hex, e.g. 1d6b:0104", s)
	}
	return ID{uint16(vid), uint16(pid)}, nil
}

// Selector names the USB device a host side drives: by ID (any bus), or
// by bus number and device address.
type Selector struct {
	ID        ID
	Bus, Addr int // both nonzero: this device only, whatever its ID
}

// ParseSelector parses "" (the default ID), "VID:PID" or "BUS.ADDR"
// (decimal, as lsusb prints them).
func ParseSelector(s string) (Selector, error) {
	if s == "" {
		return Selector{ID: DefaultID}, nil
	}
	if b, a, ok := strings.Cut(s, "."); ok {
		bus, err1 := strconv.Atoi(b)
		addr, err2 := strconv.Atoi(a)
		if err1 != nil || err2 != nil || bus < 1 || bus > 255 || addr < 1 || addr > 127 {
			return Selector{}, fmt.Errorf("USB device %q: want BUS.ADDR (1..255.1..127) or VID:PID", s)
		}
		return Selector{Bus: bus, Addr: addr}, nil
	}
	id, err := ParseID(s)
	if err != nil {
		return Selector{}, err
	}
	return Selector{ID: id}, nil
}

func (s Selector) String() string {
	if s.Bus != 0 {
		return fmt.Sprintf("bus %d address %d", s.Bus, s.Addr)
	}
	return s.ID.String()
}

// Errors of the USB host side (package usbhost, a -tags usb build), here
// so that a caller built without it can tell them apart.
var (
	// ErrAccess: the device node could not be opened for writing.
	ErrAccess = errors.New("permission denied on the USB device node")
	// ErrDescriptors: a device matches the selector but has not the
	// cable's interface (another product with the same IDs, say).
	ErrDescriptors = errors.New("USB device without the cable's interface")
)
