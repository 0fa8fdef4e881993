// Package usbhost is the host end of a USB cable (package usbcable): it
// finds the gadget (package usbcable/gadget) through libusb with gousb,
// claims its vendor interface and returns the session's bulk pipe as a
// usbcable.Conn.
//
// It needs cgo and libusb-1.0 (libusb-1.0-0-dev to build), so it is
// built only with the build tag usb (go build -tags usb); without the tag
// the package is empty and the default build stays static.
//
// Each Open starts a session: a fresh libusb context (libusb's device
// list is only refreshed by udevd's events otherwise), the device found
// by ID or bus and address, a USB port reset (so the device side ends
// whatever session it had and starts anew), configuration 1, interface 0
// claimed, its bulk IN and OUT endpoints found in its descriptor. Reads
// run as a gousb ReadStream of usbcable.ReadsInFlight transfers of
// usbcable.MaxTransfer bytes; writes are one libusb transfer at a time
// (libusb splits one into several URBs in flight), since gousb v1.1.3's
// WriteStream submits every transfer at its full size and so cannot send
// the short last transfer of a write.
//
// It does not know the cable framing.
package usbhost
