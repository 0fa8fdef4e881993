package daemon

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"tbstream/nhi/emu"
	"tbstream/nhi/emu/usbcable"
	"tbstream/xdomain/ctl"
)

// ParseFlags reads the daemon's command line.
func ParseFlags(name string, args []string) (Options, error) {
	var o Options
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.Name, "name", "", "host name published to peers (default: the node name)")
	fs.StringVar(&o.RunDir, "run-dir", "", "directory for the configfs mount, devices and sockets (required; it and its parents must be writable by root alone)")
	fs.StringVar(&o.VFIO, "vfio", "", "PCI address of a real NHI bound to vfio-pci; empty: emulated NHI")
	fs.StringVar(&o.Listen, "listen", "", "accept the emulated cable on unix:PATH or tcp:ADDR")
	fs.StringVar(&o.Connect, "connect", "", "dial the emulated cable at unix:PATH or tcp:HOST:PORT")
	keyFile := fs.String("cable-key", "", "file (mode 0600) of the shared key both cable ends prove; needed to listen beyond loopback")
	fs.BoolVar(&o.CableSharedMemory, "cable-shm", true, "on a unix-socket cable, carry the frames through shared memory when the peer offers it too")
	cable := fs.String("cable", "", "a USB cable: usb-gadget[:UDC] (this host is the USB device) or usb[:VID:PID|BUS.ADDR] (the USB host; needs a build with -tags usb)")
	usbID := fs.String("usb-id", "", "the gadget's USB vendor:product ID in hex (default 1d6b:0104, Linux's example ID: a product must use its own)")
	adapter := fs.Uint("adapter", 1, "lane adapter (1..4) the cable plugs into")
	peer := fs.String("peer-route", "", "route (hex) at which the peer appears, e.g. 503 (default: the adapter)")
	fs.StringVar(&o.Devices, "devices", "auto", "device nodes: auto, cuse or fuse")
	fs.StringVar(&o.DevicePrefix, "device-prefix", "", "prefix of CUSE node names")
	mode := fs.String("node-mode", "0600", "permissions of the device nodes")
	fs.IntVar(&o.NodeUID, "node-uid", 0, "owner of the device nodes")
	fs.IntVar(&o.NodeGID, "node-gid", 0, "group of the device nodes")
	verbose := fs.Bool("v", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w\nusage of %s:\n%s", err, name, usage(fs))
	}
	if o.RunDir == "" || fs.NArg() > 0 {
		return o, fmt.Errorf("usage of %s:\n%s", name, usage(fs))
	}
	if *adapter < 1 || *adapter > 4 {
		return o, fmt.Errorf("-adapter %d: want 1..4", *adapter)
	}
	o.Adapter = uint8(*adapter)
	if *peer != "" {
		r, err := ctl.ParseRoute(*peer)
		if err != nil {
			return o, fmt.Errorf("-peer-route: %w", err)
		}
		o.PeerRoute = r
	}
	m, err := strconv.ParseUint(*mode, 8, 32)
	if err != nil || m > 0o777 {
		return o, fmt.Errorf("-node-mode %q: want octal permissions", *mode)
	}
	o.NodeMode = os.FileMode(m)
	if *keyFile != "" {
		if o.CableKey, err = emu.LoadCableKey(*keyFile); err != nil {
			return o, fmt.Errorf("-cable-key: %w", err)
		}
	}
	if err := checkCableListen(o); err != nil {
		return o, err
	}
	if *cable != "" {
		uc, err := ParseCable(*cable)
		if err != nil {
			return o, err
		}
		if !uc.Gadget && !USBHostBuilt {
			return o, fmt.Errorf("-cable %s: %w", *cable, errNoUSBHost)
		}
		o.Cable = &uc
	}
	if *usbID != "" {
		if o.USBID, err = usbcable.ParseID(*usbID); err != nil {
			return o, fmt.Errorf("-usb-id: %w", err)
		}
	}
	if err := checkUSBCable(o); err != nil {
		return o, err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return o, nil
}

// checkCableListen refuses a TCP cable listener beyond loopback without a
// cable key.
func checkCableListen(o Options) error {
	if network, a, err := parseAddr(o.Listen); o.Listen != "" && err == nil && network == "tcp" {
		if err := emu.CheckTCPListen(a, o.CableKey != nil); err != nil {
			return fmt.Errorf("-listen %s: %w (give -cable-key FILE)", o.Listen, err)
		}
	}
	return nil
}

func usage(fs *flag.FlagSet) string {
	var b []byte
	fs.VisitAll(func(f *flag.Flag) {
		b = fmt.Appendf(b, "  -%s\t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
	})
	return string(b)
}
