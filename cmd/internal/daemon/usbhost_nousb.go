//go:build !usb

package daemon

import (
	"context"

	"tbstream/nhi/emu/usbcable"
)

// usbHostBuilt says whether this binary can drive a USB cable as host.
const usbHostBuilt = false

func openUSBHost(context.Context, usbcable.Selector) (usbConn, error) {
	return nil, errNoUSBHost
}
