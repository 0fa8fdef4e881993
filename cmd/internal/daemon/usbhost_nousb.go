//go:build !usb

package daemon

import (
	"context"

	"tbstream/nhi/emu/usbcable"
)

// USBHostBuilt says whether this binary can drive a USB cable as host
// (a cgo build with -tags usb).
const USBHostBuilt = false

func openUSBHost(context.Context, usbcable.Selector) (usbConn, error) {
	return nil, errNoUSBHost
}
