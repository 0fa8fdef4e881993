package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
	"tbstream/nhi/emu/usbcable"
)

// ErrVersion is what ParseFlags returns for -version: the caller prints
// Version and exits 0, as for flag.ErrHelp (-h) it prints the usage.
var ErrVersion = errors.New("version requested")

// rawFlags are the flags ParseFlags turns into Options.
type rawFlags struct {
	keyFile, cable, usbID, peer, mode string
	adapter                           uint
	verbose, version                  bool
}

// newFlagSet defines the daemon's flags on a flag set that prints
// nothing: the callers say what went wrong, once.
func newFlagSet(name string, o *Options, r *rawFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&o.Name, "name", "", "the host's `NAME`, published to peers (default: the node name)")
	fs.StringVar(&o.RunDir, "run-dir", "", "the host's run directory `DIR`: configfs, sysfs view, fallback devices, status socket, lock (required; it and its parents must be writable by root alone)")
	fs.StringVar(&o.VFIO, "vfio", "", "drive the real NHI at PCI `ADDRESS`, bound to vfio-pci, instead of an emulated one")
	fs.StringVar(&o.Listen, "listen", "", "accept the emulated cable at `ADDR`: unix:PATH, or tcp:[HOST]:PORT (loopback unless a host is given)")
	fs.StringVar(&o.Connect, "connect", "", "dial the emulated cable at `ADDR`: unix:PATH or tcp:HOST:PORT; both ends re-plug when it drops")
	fs.StringVar(&r.keyFile, "cable-key", "", "the shared key both cable ends prove, in `FILE` (16 to 4096 bytes, mode 0600 or stricter); needed to listen beyond loopback")
	fs.BoolVar(&o.CableSharedMemory, "cable-shm", true, "on a unix-socket cable, carry the frames through shared memory when the peer offers it too")
	fs.StringVar(&r.cable, "cable", "", "a USB cable, `KIND` usb-gadget[:UDC] (this host is the USB device, through FunctionFS) or usb[:VID:PID|BUS.ADDR] (the USB host, through libusb; needs a build with -tags usb)")
	fs.StringVar(&r.usbID, "usb-id", "", "the gadget's USB vendor and product `ID`, VID:PID in hex (default: 1d6b:0104, Linux's example ID; a product must use its own)")
	fs.UintVar(&r.adapter, "adapter", 1, "the lane adapter `N` (1..4) the cable plugs into")
	fs.StringVar(&r.peer, "peer-route", "", "the `ROUTE` (hex) at which the peer appears, e.g. 503 (default: the adapter)")
	fs.StringVar(&o.Devices, "devices", "auto", "the device nodes' `KIND`: auto (CUSE where /dev/cuse exists, else the FUSE fallback), cuse or fuse")
	fs.StringVar(&o.DevicePrefix, "device-prefix", "", "`PREFIX` of the CUSE node names (host1/ puts them in /dev/host1/)")
	fs.StringVar(&r.mode, "node-mode", "0600", "the device nodes' permissions, `MODE` in octal (CUSE and fallback nodes alike)")
	fs.IntVar(&o.NodeUID, "node-uid", 0, "the device nodes' owner `UID`")
	fs.IntVar(&o.NodeGID, "node-gid", 0, "the device nodes' group `GID`")
	fs.BoolVar(&r.verbose, "v", false, "log debug messages")
	fs.BoolVar(&r.version, "version", false, "print the version and exit")
	return fs
}

// ParseFlags reads the daemon's command line. It returns flag.ErrHelp for
// -h or --help and ErrVersion for -version, each for the caller to answer;
// any other error is a command line the daemon refuses (its text names
// the flag; the caller adds where the usage is).
func ParseFlags(name string, args []string) (Options, error) {
	var o Options
	var r rawFlags
	fs := newFlagSet(name, &o, &r)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if r.version {
		return o, ErrVersion
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: the daemon takes flags only", fs.Arg(0))
	}
	if o.RunDir == "" {
		return o, errors.New("-run-dir is required")
	}
	if r.adapter < 1 || r.adapter > 4 {
		return o, fmt.Errorf("-adapter %d: want 1..4", r.adapter)
	}
	o.Adapter = uint8(r.adapter)
	if r.peer != "" {
		route, err := ctl.ParseRoute(r.peer)
		if err != nil {
			return o, fmt.Errorf("-peer-route: %w", err)
		}
		o.PeerRoute = route
	}
	m, err := strconv.ParseUint(r.mode, 8, 32)
	if err != nil || m > 0o777 {
		return o, fmt.Errorf("-node-mode %q: want octal permissions", r.mode)
	}
	o.NodeMode = os.FileMode(m)
	if r.keyFile != "" {
		if o.CableKey, err = emu.LoadCableKey(r.keyFile); err != nil {
			return o, fmt.Errorf("-cable-key: %w", err)
		}
	}
	if err := checkCableListen(o); err != nil {
		return o, err
	}
	if r.cable != "" {
		uc, err := ParseCable(r.cable)
		if err != nil {
			return o, err
		}
		if !uc.Gadget && !USBHostBuilt {
			return o, fmt.Errorf("-cable %s: %w", r.cable, errNoUSBHost)
		}
		o.Cable = &uc
	}
	if r.usbID != "" {
		if o.USBID, err = usbcable.ParseID(r.usbID); err != nil {
			return o, fmt.Errorf("-usb-id: %w", err)
		}
	}
	if err := checkUSBCable(o); err != nil {
		return o, err
	}
	level := slog.LevelInfo
	if r.verbose {
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

// FlagDefaults is the daemon's flags as its usage lists them, in the
// spirit of flag.PrintDefaults (see FormatFlags).
func FlagDefaults() string {
	var o Options
	var r rawFlags
	return FormatFlags(newFlagSet("", &o, &r))
}

// flagWidth is where FormatFlags wraps a flag's text.
const flagWidth = 78

// FormatFlags lists the flags of fs as FlagDefaults does, for the usage
// of any command: "  -name VALUE" (VALUE the usage's first `quoted` word,
// as flag.UnquoteUsage finds it), then the usage wrapped and indented by
// eight spaces, with " (default X)" unless X is the zero value.
func FormatFlags(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		value, usage := flag.UnquoteUsage(f)
		b.WriteString("  -" + f.Name)
		if value != "" {
			b.WriteString(" " + value)
		}
		b.WriteString("\n")
		if !zeroDefault(f) {
			usage += " (default " + f.DefValue + ")"
		}
		b.WriteString(wrap(usage, "        ", flagWidth))
	})
	return b.String()
}

// zeroDefault says whether a flag's default is its type's zero value,
// which the usage does not print: "", 0, false, 0s.
func zeroDefault(f *flag.Flag) bool {
	t := reflect.TypeOf(f.Value)
	if t.Kind() != reflect.Pointer {
		return f.DefValue == ""
	}
	zero, ok := reflect.New(t.Elem()).Interface().(flag.Value)
	return ok && f.DefValue == zero.String()
}

// wrap breaks text into lines of at most width columns (longer words
// stay whole), each begun with indent.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if line != indent && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}

// Version is prog's version line, for -version and `tbstream version`:
// the module's version, the VCS revision, time and whether the tree was
// modified (as the go command stamped them), the Go version, the platform
// and the build tags.
func Version(prog string) string {
	bi, _ := debug.ReadBuildInfo() // nil when the binary has none
	return formatVersion(prog, bi)
}

// formatVersion is Version from the build information bi (nil: none).
func formatVersion(prog string, bi *debug.BuildInfo) string {
	version, goVersion := "(unknown)", runtime.Version()
	settings := map[string]string{}
	if bi != nil {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
	}
	rev := "rev unknown"
	if r := settings["vcs.revision"]; r != "" {
		rev = "rev " + r[:min(len(r), 7)]
		if settings["vcs.modified"] == "true" {
			rev += " (modified)"
		}
		if t := settings["vcs.time"]; t != "" {
			rev += " " + t
		}
	}
	goos, goarch := settings["GOOS"], settings["GOARCH"]
	if goos == "" {
		goos = runtime.GOOS
	}
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	tags := settings["-tags"]
	if tags == "" {
		tags = "none"
	}
	return fmt.Sprintf("%s %s %s, %s %s/%s, tags: %s", prog, version, rev, goVersion, goos, goarch, tags)
}
