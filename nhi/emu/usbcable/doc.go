// Package usbcable carries an emulated cable (package emu's framing,
// unchanged) over a USB bulk pipe: one bulk OUT endpoint host → device,
// one bulk IN endpoint device → host, on one vendor-specific interface.
// The device end is a USB gadget served through FunctionFS (package
// usbcable/gadget, pure Go); the host end drives it through libusb
// (package usbcable/usbhost, cgo, build tag usb). Both give this package
// a Transport and get back a Conn, a net.Conn that package emu's
// PlugStream runs the cable over, so the handshake (HELLO, AUTH), the
// frames (DATA, CONTROL, CREDIT, …) and everything above are those of the
// unix and TCP cables.
//
// It does not know the cable framing: the bulk pipe carries the cable's
// byte stream, and emu's reader parses frames from it whatever the
// transfer boundaries are.
//
// # Packing
//
// emu batches the frames of a pass into one write of up to 256 KiB. Conn
// cuts each write into bulk transfers of at most MaxTransfer bytes, so a
// transfer carries many frames (and a frame may straddle two transfers of
// one write). The last transfer of a write is a short transfer: when its
// length is a multiple of the endpoint's wMaxPacketSize (which would leave
// a larger read on the other side waiting for more), a zero-length packet
// (ZLP) follows it. A reader therefore never waits for bytes that were
// written: every write ends with a short packet or a ZLP.
//
//	write of n bytes   transfers
//	n = 0              none
//	n ≤ MaxTransfer    [n]             + [0] if n % maxPacket == 0
//	n > MaxTransfer    [MaxTransfer]… [rest] + [0] if rest % maxPacket == 0
//
// Reads take whatever a bulk read returns (the device side's reads do not
// match the host's transfer boundaries: dummy_hcd and real UDCs merge
// packets until a short one) and hand the bytes on in order.
//
// # Errors
//
// Any failed transfer — a stall, a babble (overflow), a reset, the device
// gone, the endpoint disabled — ends the Conn: its reads and writes fail
// from then on, emu sees the cable end and unplugs it (both hosts get the
// hot-unplug event), and the daemon plugs a new session in once the
// device is back. Nothing is lost silently inside a stream that stays up:
// a cable frame broken by the failure dies with the cable, as it would
// with a pulled USB4 cable. A malformed frame (garbage on the bulk
// endpoints) is emu's ErrMalformed: the cable closes the same way.
//
// # Sessions
//
// One USB configuration is one cable session. The host side starts each
// session with a USB port reset, so that the device side, whatever it was
// doing, sees its function disabled (FunctionFS DISABLE, its transfers
// end with ESHUTDOWN) and enabled again: both ends then start the
// handshake from nothing. The device side ends a session it gives up on
// (a malformed frame, a handshake that fails) by unbinding and rebinding
// its UDC, which the host sees as an unplug followed by a plug.
package usbcable
