//go:build usb

package daemon

import (
	"context"

	"tbstream/nhi/emu/usbcable"
	"tbstream/nhi/emu/usbcable/usbhost"
)

// USBHostBuilt says whether this binary can drive a USB cable as host
// (a cgo build with -tags usb).
const USBHostBuilt = true

func openUSBHost(ctx context.Context, sel usbcable.Selector) (usbConn, error) {
	c, err := usbhost.Open(ctx, sel)
	if err != nil {
		return nil, err
	}
	return c, nil
}
