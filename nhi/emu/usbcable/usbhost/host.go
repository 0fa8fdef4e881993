//go:build usb

package usbhost

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/google/gousb"

	"tbstream/nhi/emu/usbcable"
)

// ErrNotFound: no device matches the selector (yet).
var ErrNotFound = errors.New("no such USB device")

// ErrAccess: the device node could not be opened for writing.
var ErrAccess = usbcable.ErrAccess

// ErrDescriptors: the device matches but has not the cable's interface.
var ErrDescriptors = usbcable.ErrDescriptors

// UdevRule is the rule that gives a group access to the cable's device
// nodes, for the permission error's message.
func UdevRule(id usbcable.ID) string {
	return fmt.Sprintf(`/etc/udev/rules.d/70-tbstream.rules: SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="%04x", ATTR{idProduct}=="%04x", MODE="0660", GROUP="plugdev"`, id.Vendor, id.Product)
}

func (p *pipe) matches(sel usbcable.Selector, d *gousb.DeviceDesc) bool {
	if sel.Bus != 0 {
		return d.Bus == sel.Bus && d.Address == sel.Addr
	}
	return uint16(d.Vendor) == sel.ID.Vendor && uint16(d.Product) == sel.ID.Product
}

// Open finds the device and starts a session on it (see the package doc).
func Open(ctx context.Context, sel usbcable.Selector) (conn *usbcable.Conn, err error) {
	uctx, err := newContext()
	if err != nil {
		return nil, err
	}
	p := &pipe{uctx: uctx}
	if err := p.open(sel); err != nil {
		p.release()
		return nil, err
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return usbcable.NewConn(p), nil
}

// newContext is gousb.NewContext, which panics when libusb_init fails
// (no /dev/bus/usb, say): here that is an error.
func newContext() (c *gousb.Context, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("libusb init: %v", r)
		}
	}()
	return gousb.NewContext(), nil
}

// pipe is one session's bulk pipe.
type pipe struct {
	uctx   *gousb.Context
	dev    *gousb.Device
	cfg    *gousb.Config
	intf   *gousb.Interface
	in     *gousb.InEndpoint
	out    *gousb.OutEndpoint
	rs     *gousb.ReadStream
	mps    int
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	// calls counts ReadTransfer and WriteTransfer in progress, so that
	// Close frees nothing they use.
	calls sync.WaitGroup
	once  sync.Once
	// mu guards closing.
	mu      sync.Mutex
	closing bool
}

func (p *pipe) open(sel usbcable.Selector) error {
	var found *gousb.DeviceDesc
	devs, err := p.uctx.OpenDevices(func(d *gousb.DeviceDesc) bool {
		if p.matches(sel, d) && found == nil {
			found = d
			return true
		}
		return false
	})
	for _, d := range devs {
		if p.dev == nil {
			p.dev = d
		} else {
			d.Close()
		}
	}
	if p.dev == nil {
		if found != nil && errors.Is(err, gousb.ErrorAccess) {
			return fmt.Errorf("%w: /dev/bus/usb/%03d/%03d (%s): run as root or install the udev rule %s", ErrAccess, found.Bus, found.Address, sel, UdevRule(usbcable.ID{Vendor: uint16(found.Vendor), Product: uint16(found.Product)}))
		}
		if found != nil && err != nil {
			return fmt.Errorf("usb %s: open: %w", sel, err)
		}
		return fmt.Errorf("usb %s: %w", sel, ErrNotFound)
	}
	desc := p.dev.Desc
	p.name = fmt.Sprintf("usb %d-%d %s", desc.Bus, desc.Address, sel)
	in, out, err := cableEndpoints(desc)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.mps = out.MaxPacketSize
	if err := p.dev.Reset(); err != nil {
		return fmt.Errorf("%s: reset: %w", p.name, err)
	}
	p.dev.SetAutoDetach(true)
	if p.cfg, err = p.dev.Config(usbcable.ConfigValue); err != nil {
		return fmt.Errorf("%s: configuration %d: %w", p.name, usbcable.ConfigValue, err)
	}
	if p.intf, err = p.cfg.Interface(usbcable.InterfaceNumber, usbcable.InterfaceAlt); err != nil {
		return fmt.Errorf("%s: claim interface: %w", p.name, err)
	}
	if p.in, err = p.intf.InEndpoint(in.Number); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	if p.out, err = p.intf.OutEndpoint(out.Number); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	if p.rs, err = p.in.NewStream(usbcable.MaxTransfer, usbcable.ReadsInFlight); err != nil {
		return fmt.Errorf("%s: read stream: %w", p.name, err)
	}
	return nil
}

// cableEndpoints checks the descriptors: configuration 1, interface 0
// alt 0 of the vendor class with exactly one bulk IN and one bulk OUT.
func cableEndpoints(d *gousb.DeviceDesc) (in, out gousb.EndpointDesc, err error) {
	cfg, ok := d.Configs[usbcable.ConfigValue]
	if !ok {
		return in, out, fmt.Errorf("no configuration %d: %w", usbcable.ConfigValue, ErrDescriptors)
	}
	if len(cfg.Interfaces) <= usbcable.InterfaceNumber || len(cfg.Interfaces[usbcable.InterfaceNumber].AltSettings) == 0 {
		return in, out, fmt.Errorf("no interface %d: %w", usbcable.InterfaceNumber, ErrDescriptors)
	}
	alt := cfg.Interfaces[usbcable.InterfaceNumber].AltSettings[usbcable.InterfaceAlt]
	if alt.Class != gousb.Class(usbcable.InterfaceClass) || alt.SubClass != gousb.Class(usbcable.InterfaceSubClass) || alt.Protocol != gousb.Protocol(usbcable.InterfaceProtocol) {
		return in, out, fmt.Errorf("interface class %s/%s/%s, want vendor ff/00/00: %w", alt.Class, alt.SubClass, alt.Protocol, ErrDescriptors)
	}
	var nin, nout int
	// In address order: Endpoints is a map, and the error must name the
	// same endpoint at every poll (the daemon logs a message once).
	for _, a := range slices.Sorted(maps.Keys(alt.Endpoints)) {
		ep := alt.Endpoints[a]
		if ep.TransferType != gousb.TransferTypeBulk {
			return in, out, fmt.Errorf("endpoint %s is not bulk: %w", ep.Address, ErrDescriptors)
		}
		if ep.Direction == gousb.EndpointDirectionIn {
			in, nin = ep, nin+1
		} else {
			out, nout = ep, nout+1
		}
	}
	if nin != 1 || nout != 1 || in.MaxPacketSize <= 0 || out.MaxPacketSize <= 0 {
		return in, out, fmt.Errorf("%d bulk IN and %d bulk OUT endpoints, want one each: %w", nin, nout, ErrDescriptors)
	}
	return in, out, nil
}

func (p *pipe) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.calls.Add(1)
	return true
}

func (p *pipe) ReadTransfer(b []byte) (int, error) {
	if !p.enter() {
		return 0, usbcable.ErrClosed
	}
	defer p.calls.Done()
	return p.rs.ReadContext(p.ctx, b)
}

func (p *pipe) WriteTransfer(b []byte) error {
	if !p.enter() {
		return usbcable.ErrClosed
	}
	defer p.calls.Done()
	n, err := p.out.WriteContext(p.ctx, b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short bulk OUT transfer: %d of %d bytes", n, len(b))
	}
	return err
}

func (p *pipe) MaxPacket() int { return p.mps }
func (p *pipe) Name() string   { return p.name }

// Close cancels the transfers in flight, waits for them and releases the
// interface, configuration, device and context, in that order.
func (p *pipe) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.closing = true
		p.mu.Unlock()
		p.cancel()
		p.calls.Wait()
		p.release()
	})
	return nil
}

func (p *pipe) release() {
	if p.rs != nil {
		p.rs.Close()
	}
	if p.intf != nil {
		p.intf.Close()
	}
	if p.cfg != nil {
		p.cfg.Close()
	}
	if p.dev != nil {
		p.dev.Close()
	}
	p.uctx.Close()
}
