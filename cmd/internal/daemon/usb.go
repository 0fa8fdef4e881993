package daemon

// USB cables: -cable usb-gadget[:UDC] (this host is the USB device, a
// gadget through configfs and FunctionFS) or -cable usb[:VID:PID|BUS.ADDR]
// (this host is the USB host, through libusb; needs a build with -tags usb).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"tbstream/nhi/emu/usbcable"
	"tbstream/nhi/emu/usbcable/gadget"
)

// USBCable is a parsed -cable value.
type USBCable struct {
	Gadget bool   // usb-gadget: this host is the USB device
	UDC    string // usb-gadget:UDC
	// Device selects the gadget on the USB host side (usb:...).
	Device usbcable.Selector
}

// ParseCable parses -cable: "usb-gadget", "usb-gadget:UDC", "usb",
// "usb:VID:PID" or "usb:BUS.ADDR".
func ParseCable(s string) (USBCable, error) {
	kind, arg, _ := strings.Cut(s, ":")
	switch kind {
	case "usb-gadget":
		return USBCable{Gadget: true, UDC: arg}, nil
	case "usb":
		sel, err := usbcable.ParseSelector(arg)
		if err != nil {
			return USBCable{}, fmt.Errorf("-cable %s: %w", s, err)
		}
		return USBCable{Device: sel}, nil
	}
	return USBCable{}, fmt.Errorf("-cable %q: want usb-gadget[:UDC] or usb[:VID:PID|BUS.ADDR]", s)
}

// gadgetEnableWait is how long a bound gadget waits for the host's ENABLE
// before the daemon logs that it has none. A host configures a device it
// accepts within a second or two of the bind, also in a software-emulated
// VM; a fresh plug after an unplug ends the wait at once.
const gadgetEnableWait = 10 * time.Second

// gadgetCables runs the USB device side: the gadget stays bound while the
// daemon runs; each session the host enables is a cable plugged.
func (d *Daemon) gadgetCables(ctx context.Context, uc USBCable) {
	defer d.wg.Done()
	g, err := gadget.Start(gadget.Config{
		Name:     "tbstream",
		UDC:      uc.UDC,
		ID:       d.opts.USBID,
		Serial:   d.opts.Name,
		MountDir: filepath.Join(d.opts.RunDir, "ffs"),
		Logger:   d.log,
	})
	if err != nil {
		d.log.Error("cannot make the USB gadget", "err", err)
		return
	}
	defer g.Close()
	for ctx.Err() == nil {
		// A host that enumerates the gadget but never configures it
		// (not authorized, a driver that does not take it) leaves the
		// gadget bound and silent: say so once a wait.
		waiting := time.AfterFunc(gadgetEnableWait, func() {
			d.log.Warn("usb gadget bound but the host has not enabled it", "waited", gadgetEnableWait,
				"hint", "is the cable plugged, and does the host configure the device (Linux: /sys/bus/usb/devices/*/authorized)?")
		})
		conn, err := g.Accept(ctx)
		waiting.Stop()
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("usb gadget accept failed", "err", err)
			}
			return
		}
		// The host may have enabled the function with no daemon yet:
		// wait for its hello before starting the handshake's clock.
		if err := conn.WaitData(ctx); err != nil {
			conn.Close()
			d.log.Info("usb gadget session ended before the host spoke", "why", err)
			continue
		}
		d.log.Info("usb host enabled the gadget: cable handshake")
		c, err := d.emu.PlugStream(ctx, conn, false, d.port())
		if err != nil {
			d.log.Warn("usb cable handshake failed; re-plugging", "err", err)
			continue // PlugStream closed conn, which rebinds the UDC
		}
		d.log.Info("cable plugged", "over", "usb gadget")
		d.holdCable(ctx, c)
		conn.Close()
		if err := conn.Err(); err != nil {
			d.log.Info("usb cable session ended", "why", err)
		}
	}
}

// hostCables runs the USB host side: find the gadget, start a session,
// hold the cable, and again when it ends (the device unplugged, a
// transfer failed, a malformed frame).
func (d *Daemon) hostCables(ctx context.Context, uc USBCable) {
	defer d.wg.Done()
	var last string
	for ctx.Err() == nil {
		conn, err := openUSBHost(ctx, uc.Device)
		if err != nil {
			if errors.Is(err, errNoUSBHost) {
				d.log.Error("cannot drive a USB cable", "err", err)
				return
			}
			// Once per state: an error repeats at every poll while the
			// device stays as it is, and a device that goes and comes
			// back has a new address, so a new message.
			if msg := err.Error(); msg != last {
				switch {
				case errors.Is(err, usbcable.ErrDescriptors):
					d.log.Error("a USB device has the cable's IDs but not its descriptors: not a tbstream gadget (another product with the same IDs? give both ends other IDs: -usb-id on the gadget, -cable usb:VID:PID here); ignored", "err", err)
				case errors.Is(err, usbcable.ErrAccess):
					d.log.Error("cannot open the USB cable's device", "err", err)
				default:
					d.log.Warn("waiting for the USB cable's device", "err", err)
				}
				last = msg
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		last = ""
		c, err := d.emu.PlugStream(ctx, conn, true, d.port())
		if err != nil {
			d.log.Warn("usb cable handshake failed; re-plugging", "err", err)
			continue
		}
		d.log.Info("cable plugged", "over", conn.LocalAddr().String())
		d.holdCable(ctx, c)
		conn.Close()
		if err := conn.Err(); err != nil {
			d.log.Info("usb cable session ended", "why", err)
		}
	}
}

// usbConn is what openUSBHost returns.
type usbConn interface {
	net.Conn
	Err() error
}

var _ usbConn = (*usbcable.Conn)(nil)

// checkUSBCable is for an emulated NHI only.
func checkUSBCable(o Options) error {
	if o.Cable == nil {
		return nil
	}
	if o.VFIO != "" {
		return errors.New("-cable usb…: a USB cable joins emulated NHIs; not with -vfio")
	}
	return nil
}

// errNoUSBHost: this binary was built without the USB host side.
var errNoUSBHost = errors.New("this tbstreamd was built without the USB host side: build it with CGO_ENABLED=1 go build -tags usb (needs libusb-1.0-0-dev)")
