// Package daemon is tbstreamd: one host with its NHI backend (emulated, with
// a cable to a peer, or VFIO), the configfs mount, the device nodes (CUSE
// when /dev/cuse exists, the FUSE fallback otherwise) and a status socket.
// `tbstreamd` and `tbstream daemon` both run it.
//
// A run directory holds everything a host exposes:
//
//	<run>/lock         held (flock) while the daemon runs; mode 0600
//	<run>/config       configfs: <run>/config/thunderbolt/stream/...
//	<run>/dev          FUSE fallback nodes: <run>/dev/tbstreamN
//	<run>/sys          the sysfs view: bus/thunderbolt, module/thunderbolt_stream
//	<run>/status.sock  one request line, one answer: "status" (JSON, for
//	                   `tbstream list`), "stacks" (every goroutine's stack) or
//	                   "cpuprofile SECONDS" (pprof) or "trace SECONDS",
//	                   "unplug" (pull the emulated cable out); mode 0666:
//	                   "status" for anyone, the others for root alone
//	<run>/pid
//
// The run directory must be root's alone: a directory that is a symlink,
// is owned by another user or is writable by group or others (or has a
// parent, /tmp aside, that others can write) is refused with one line
// naming it and the fix, as OpenSSH's StrictModes refuses a writable home
// (see CheckRunDir). Its files are opened without following symlinks.
//
// A daemon closes, first thing, every descriptor it inherited beyond
// stdin, stdout and stderr (CloseInherited): a lock its starter's shell
// held must not stay held until the daemon stops.
package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"tbstream/cmd/internal/host"
	"tbstream/cmd/internal/stream"
	"tbstream/cmd/internal/sysfs"
	"tbstream/configfs"
	"tbstream/cuse"
	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
	"tbstream/nhi/emu/usbcable"
	"tbstream/nhi/vfio"
	"tbstream/xdomain"
)

// Options configure one daemon.
type Options struct {
	// Name of the host, published as deviceid text.
	Name string
	// RunDir holds the mounts and sockets (see the package doc).
	RunDir string
	// VFIO is a PCI address (0000:00:0d.2) of a real NHI; empty runs the
	// emulated NHI.
	VFIO string
	// Listen accepts a cable ("unix:PATH" or "tcp:ADDR"); Connect dials
	// one. Either, both or neither may be set; a cable that ends is
	// accepted or dialled again (re-plug).
	Listen, Connect string
	// Cable is a USB cable (-cable usb-gadget… or usb…); nil: none.
	Cable *USBCable
	// USBID is the gadget's vendor:product ID (-usb-id); zero: the
	// default (usbcable.DefaultID), which a product must not ship with.
	USBID usbcable.ID
	// CableKey is the shared key both cable ends prove (emu.LoadCableKey
	// reads -cable-key); nil: none. A TCP listener beyond loopback needs one.
	CableKey []byte
	// CableSharedMemory offers the peer, on a unix-socket cable, to carry
	// the frames through shared memory (used when both ends offer it).
	CableSharedMemory bool
	// Adapter is the lane adapter the cable plugs into (1..4) and
	// PeerRoute the route at which the peer appears (default: Adapter).
	Adapter   uint8
	PeerRoute ctl.Route
	// Devices is "auto" (CUSE if /dev/cuse exists), "cuse" or "fuse".
	Devices string
	// DevicePrefix is put before CUSE node names ("" gives /dev/tbstreamN).
	DevicePrefix string
	// NodeMode, NodeUID and NodeGID apply to the device nodes.
	NodeMode         os.FileMode
	NodeUID, NodeGID int
	Timing           xdomain.Timing
	Logger           *slog.Logger
}

// Daemon is a running host.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	dir     *os.File // the run directory, checked (MakeRunDir)
	lock    *os.File
	dev     nhi.Device
	emu     *emu.Host
	host    *host.Host
	config  *configfs.Server
	sysfs   *sysfs.Server
	devices devices
	status  net.Listener
	cable   atomic.Pointer[emu.Cable] // the cable plugged now, if any
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// devices are the node registries: CUSE or the FUSE fallback.
type devices interface {
	stream.Devices
	Close() error
	Panics() uint64
}

// Paths of a run directory.
func ConfigDir(run string) string  { return filepath.Join(run, "config") }
func DevDir(run string) string     { return filepath.Join(run, "dev") }
func StatusPath(run string) string { return filepath.Join(run, statusName) }

// ErrRunning is returned when another daemon holds the run directory.
var ErrRunning = errors.New("another tbstreamd uses this run directory")

// Start brings the host up. Stop (or ctx's end) takes it down.
func Start(ctx context.Context, opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Name == "" {
		opts.Name, _ = os.Hostname()
	}
	if opts.Adapter == 0 {
		opts.Adapter = 1
	}
	if opts.PeerRoute == 0 {
		opts.PeerRoute = ctl.Route(opts.Adapter)
	}
	if opts.Devices == "" {
		opts.Devices = "auto"
	}
	if err := checkCableListen(opts); err != nil {
		return nil, err
	}
	if err := checkUSBCable(opts); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &Daemon{opts: opts, log: opts.Logger.With("host", opts.Name), cancel: cancel}
	if err := d.start(ctx); err != nil {
		d.Stop()
		return nil, err
	}
	d.log.Info("tbstreamd ready", "run", opts.RunDir, "devices", d.deviceKind())
	return d, nil
}

func (d *Daemon) start(ctx context.Context) error {
	opts := d.opts
	if err := d.takeRunDir(); err != nil {
		return err
	}
	if err := d.openDevice(); err != nil {
		return err
	}
	devs, err := d.openDevices()
	if err != nil {
		return err
	}
	d.devices = devs
	d.host, err = host.Start(host.Config{Name: opts.Name, Device: d.dev, Devices: devs, Timing: opts.Timing, Logger: d.log})
	if err != nil {
		return fmt.Errorf("start host: %w", err)
	}
	if f, ok := devs.(*fuseDevices); ok {
		// WRITE payloads land in TX buffers on the fallback too.
		f.dir.SetBuffers(d.host.Streams)
	}
	configDir, err := makeSubdir(opts.RunDir, filepath.Base(ConfigDir(opts.RunDir)))
	if err != nil {
		return err
	}
	d.config, err = configfs.Mount(ctx, configDir, d.host.Streams, configfs.Options{Logger: d.log})
	if err != nil {
		return fmt.Errorf("mount configfs: %w", err)
	}
	if err := d.mountSysfs(ctx); err != nil {
		return err
	}
	if err := d.serveStatus(ctx); err != nil {
		return err
	}
	if d.emu != nil {
		if opts.Listen != "" {
			// At once, so that an address this machine does not have
			// (yet) fails the start: a service manager retries it.
			ln, err := d.listenCable(opts.Listen)
			if err != nil {
				return fmt.Errorf("listen for a cable on %s: %w", opts.Listen, err)
			}
			d.wg.Add(1)
			go d.acceptCables(ctx, ln, opts.Listen)
		}
		if opts.Connect != "" {
			d.wg.Add(1)
			go d.dialCables(ctx, opts.Connect)
		}
		if uc := opts.Cable; uc != nil {
			d.wg.Add(1)
			if uc.Gadget {
				go d.gadgetCables(ctx, *uc)
			} else {
				go d.hostCables(ctx, *uc)
			}
		}
	}
	return nil
}

// takeRunDir creates the run directory and locks it, so that a second
// daemon on the same paths fails with a clear error, then removes what a
// daemon that died there left behind (see CleanStale). A run directory
// others could write is refused (MakeRunDir).
func (d *Daemon) takeRunDir() error {
	run := d.opts.RunDir
	if run == "" {
		return errors.New("no run directory")
	}
	dir, err := MakeRunDir(run)
	if err != nil {
		return err
	}
	d.dir = dir
	f, err := OpenIn(dir, lockName, os.O_RDWR|os.O_CREATE, lockMode)
	if err != nil {
		return fmt.Errorf("open lock: %w", err)
	}
	// Owner takes a shared lock for a moment to ask; that is not a
	// daemon, so try a few times before saying one runs.
	for try := 0; ; try++ {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil || try == 10 || !errors.Is(err, unix.EWOULDBLOCK) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", run, err)
		}
		pid, _ := Owner(run)
		return fmt.Errorf("%s (pid %d): %w", run, pid, ErrRunning)
	}
	d.lock = f
	// Older daemons made the lock readable by all, and whoever can
	// open it can hold it.
	if err := f.Chmod(lockMode); err != nil {
		return fmt.Errorf("lock %s: %w", run, err)
	}
	cleaned, err := CleanStale(run)
	if len(cleaned) > 0 {
		d.log.Warn("removed what a daemon that died left behind", "run", run, "removed", strings.Join(cleaned, ", "))
	}
	if err != nil {
		return fmt.Errorf("clean %s: %w", run, err)
	}
	pid, err := OpenIn(dir, pidName, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = pid.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if cerr := pid.Close(); err == nil {
		err = cerr
	}
	return err
}

func (d *Daemon) openDevice() error {
	if d.opts.VFIO != "" {
		dev, err := vfio.Open(d.opts.VFIO, vfio.Options{})
		if err != nil {
			return fmt.Errorf("open NHI %s: %w", d.opts.VFIO, err)
		}
		d.dev = dev
		return nil
	}
	e, err := emu.NewHost(emu.Config{Name: d.opts.Name, Logger: d.opts.Logger, CableKey: d.opts.CableKey, SharedMemory: d.opts.CableSharedMemory})
	if err != nil {
		return err
	}
	d.emu, d.dev = e, e
	return nil
}

func (d *Daemon) deviceKind() string {
	if _, ok := d.devices.(*cuseDevices); ok {
		return "cuse"
	}
	return "fuse"
}

func (d *Daemon) deviceDir() string {
	if d.deviceKind() == "fuse" {
		return DevDir(d.opts.RunDir)
	}
	return filepath.Join("/dev", filepath.Dir(d.opts.DevicePrefix+"tbstream0"))
}

func (d *Daemon) openDevices() (devices, error) {
	kind := d.opts.Devices
	if kind == "auto" {
		kind = "fuse"
		if _, err := os.Stat(cuse.DevCuse); err == nil {
			kind = "cuse"
		}
	}
	node := cuse.NodeOptions{Mode: d.opts.NodeMode, UID: d.opts.NodeUID, GID: d.opts.NodeGID}
	switch kind {
	case "cuse":
		return newCuseDevices(d.opts.RunDir, d.opts.DevicePrefix, node, d.log)
	case "fuse":
		if RaiseProcs() {
			d.log.Info("FUSE fallback devices: GOMAXPROCS raised", "procs", MinProcs)
		}
		return newFuseDevices(d.opts.RunDir, node, d.log)
	}
	return nil, fmt.Errorf("devices %q: want auto, cuse or fuse", kind)
}

func parseAddr(s string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(s, ":")
	if !ok || (network != "unix" && network != "tcp") || addr == "" {
		return "", "", fmt.Errorf("cable address %q: want unix:PATH or tcp:HOST:PORT", s)
	}
	return network, addr, nil
}

func (d *Daemon) port() emu.Port {
	return emu.Port{Adapter: d.opts.Adapter, PeerRoute: d.opts.PeerRoute}
}

// listenCable opens the listener of the cable end at addr.
func (d *Daemon) listenCable(addr string) (net.Listener, error) {
	network, a, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		// ListenUnix renames its socket over a (which does not follow
		// a symlink there), but a name that is not a socket is not a
		// dead cable's: refused.
		if err := checkSocket(a); err != nil {
			return nil, err
		}
		return emu.ListenUnix(a) // mode 0600: root only
	}
	ln, err := d.emu.ListenTCP(a)
	if err == nil && d.opts.CableKey == nil {
		d.log.Warn("cable listener without -cable-key: any local user can plug in", "addr", ln.Addr().String())
	}
	return ln, err
}

// acceptCables plugs in each cable ln accepts, one at a time, until ctx
// ends.
func (d *Daemon) acceptCables(ctx context.Context, ln net.Listener, addr string) {
	defer d.wg.Done()
	context.AfterFunc(ctx, func() { ln.Close() })
	for ctx.Err() == nil {
		c, err := d.emu.Accept(ctx, ln, d.port())
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("cable accept failed", "err", err)
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		d.log.Info("cable plugged", "from", addr, "transport", transport(c))
		d.holdCable(ctx, c)
	}
}

func (d *Daemon) dialCables(ctx context.Context, addr string) {
	defer d.wg.Done()
	network, a, err := parseAddr(addr)
	if err != nil {
		d.log.Error("cannot dial a cable", "err", err)
		return
	}
	logged := false
	for ctx.Err() == nil {
		var c *emu.Cable
		var err error
		if network == "unix" {
			err = checkSocket(a) // connect(2) would follow a symlink
		}
		if err == nil {
			c, err = d.emu.Dial(ctx, network, a, d.port())
		}
		if err != nil {
			if !logged {
				d.log.Info("waiting for the peer's cable end", "addr", addr, "err", err)
				logged = true
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		logged = false
		d.log.Info("cable plugged", "to", addr, "transport", transport(c))
		d.holdCable(ctx, c)
	}
}

// transport names how a cable carries its frames, for the log.
func transport(c *emu.Cable) string {
	if c.SharedMemory() {
		return "shared memory"
	}
	return "socket"
}

// holdCable waits until the cable ends or the daemon stops.
func (d *Daemon) holdCable(ctx context.Context, c *emu.Cable) {
	d.cable.Store(c)
	defer d.cable.CompareAndSwap(c, nil)
	select {
	case <-ctx.Done():
		c.Close()
	case <-c.Done():
		d.log.Info("cable unplugged")
	}
}

// Stop takes the host down: streams closed (open handles see the stream
// removed), nodes removed, configfs unmounted, cable unplugged.
func (d *Daemon) Stop() {
	if d.host != nil && d.host.Streams != nil {
		d.host.Streams.Shutdown()
	}
	if d.config != nil {
		if err := d.config.Unmount(); err != nil {
			d.log.Warn("configfs unmount", "err", err)
		}
	}
	if d.sysfs != nil {
		if err := d.sysfs.Unmount(); err != nil {
			d.log.Warn("sysfs view unmount", "err", err)
		}
	}
	if d.devices != nil {
		d.devices.Close()
		if d.host != nil {
			d.host.Streams.CloseLending() // the mount's readers gave back what they held
		}
	}
	d.cancel()
	if d.status != nil {
		d.status.Close()
	}
	d.wg.Wait()
	if d.host != nil {
		d.host.Close()
	}
	if d.dev != nil {
		d.dev.Close()
	}
	if d.lock != nil {
		removeIn(d.dir, statusName, unix.S_IFSOCK)
		removeIn(d.dir, pidName, unix.S_IFREG)
		d.lock.Close()
	}
	if d.dir != nil {
		d.dir.Close()
	}
}

// Run starts the daemon and stops it when ctx ends. Under a service
// manager (NOTIFY_SOCKET, see notify.go) it reports READY=1 once the host
// serves and STOPPING=1 when it begins to stop; logging to the journal
// (JOURNAL_STREAM), it leaves out the time, which the journal adds.
func Run(ctx context.Context, opts Options) error {
	notify := notifierFromEnv()
	opts.Logger = journalLogger(opts.Logger)
	d, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	d.notifyReady(notify)
	<-ctx.Done()
	d.log.Info("tbstreamd stopping")
	d.notifyStopping(notify)
	d.Stop()
	return nil
}

// Status is what the status socket serves.
type Status struct {
	Name    string
	Devices string // "cuse" or "fuse"
	// DeviceDir is where the tbstreamN nodes appear: /dev (or a
	// directory below it with a -device-prefix ending in "/") for CUSE,
	// <run>/dev for the FUSE fallback.
	DeviceDir string
	Peers     []Peer
	Groups    []stream.GroupInfo
	Process   Process
	// Fabric is the emulated NHI's counters: frames it dropped, and why
	// (nil on real hardware).
	Fabric *emu.Counters `json:",omitempty"`
	// Sysfs is what the sysfs view shows: per directory below /sys, each
	// file's text (less its final newline) and each link's target.
	Sysfs map[string]map[string]string `json:",omitempty"`
}

// Process is the daemon's own resource use, to see leaks from outside,
// and the handler panics its mounts and devices recovered (each answered
// EIO and logged with its stack).
type Process struct {
	PID, Goroutines, Threads, FDs int
	Panics                        uint64
}

func processStatus() Process {
	p := Process{PID: os.Getpid(), Goroutines: runtime.NumGoroutine()}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		p.FDs = len(fds) - 1 // less the one ReadDir itself has open
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				p.Threads, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
	}
	return p
}

// Peer is one connected host.
type Peer struct {
	xdomain.Info
	Services []Service
}

// Service is one of a peer's services.
type Service struct {
	Name, Key string
	PrtcID    uint32
}

// Status returns the current status.
func (d *Daemon) Status() Status {
	st := Status{Name: d.opts.Name, Devices: d.deviceKind(), DeviceDir: d.deviceDir(), Groups: d.host.Streams.Snapshot(), Process: processStatus()}
	st.Process.Panics = d.config.Panics() + d.devices.Panics()
	if d.emu != nil {
		c := d.emu.Counters()
		st.Fabric = &c
	}
	if d.sysfs != nil {
		st.Sysfs = d.sysfs.Attributes()
	}
	for _, xd := range d.host.XDomain.XDomains() {
		p := Peer{Info: xd.Info()}
		for _, s := range xd.Services() {
			p.Services = append(p.Services, Service{Name: s.ID.String(), Key: s.Key, PrtcID: s.PrtcID})
		}
		st.Peers = append(st.Peers, p)
	}
	return st
}

func (d *Daemon) serveStatus(ctx context.Context) error {
	path := StatusPath(d.opts.RunDir)
	// What is there is a dead daemon's socket (CleanStale removed that
	// already) or refused: removeIn never follows a symlink.
	if _, err := removeIn(d.dir, statusName, unix.S_IFSOCK); err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	d.status = ln
	// Anyone may connect and ask for the status; serveStatusConn
	// answers the other requests to root alone (peerPrivileged).
	if err := os.Chmod(path, statusMode); err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				d.serveStatusConn(ctx, c)
			}()
		}
	}()
	return nil
}

// The status socket's requests: one line from the client, one answer.
const (
	requestStatus = "status" // the Status as JSON
	requestStacks = "stacks" // every goroutine's stack, as text
	// requestProfile + " SECONDS": a CPU profile (pprof format) of the
	// next SECONDS (at most maxProfile); requestTrace the same with an
	// execution trace (go tool trace), which shows where time is spent
	// waiting: scheduling, blocking, syscalls.
	requestProfile = "cpuprofile"
	requestTrace   = "trace"
	maxProfile     = 120 * time.Second
	// requestUnplug pulls the emulated cable out, as a user would: both
	// hosts see an unplug, and the end that dials plugs it in again.
	// The answer is "unplugged" or why not.
	requestUnplug = "unplug"
)

// serveStatusConn answers one request. Each connection has its own
// goroutine, so a status that waits for a stuck lock cannot keep the
// stacks request, which takes none, from being answered.
func (d *Daemon) serveStatusConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	req = strings.TrimSpace(req)
	privileged := peerPrivileged(c)
	if req != requestStatus && !privileged {
		d.log.Debug("status socket: request refused to a user other than root", "request", req)
		if req == requestUnplug {
			fmt.Fprintln(c, "refused: unplug needs root")
		}
		return
	}
	if arg, ok := strings.CutPrefix(req, requestProfile+" "); ok {
		d.serveProfile(ctx, c, arg, pprof.StartCPUProfile, pprof.StopCPUProfile)
		return
	}
	if arg, ok := strings.CutPrefix(req, requestTrace+" "); ok {
		d.serveProfile(ctx, c, arg, trace.Start, trace.Stop)
		return
	}
	switch req {
	case requestStatus:
		st := d.Status()
		if !privileged {
			st.Process.FDs = -1 // /proc/PID/fd is root's to read
		}
		json.NewEncoder(c).Encode(st)
	case requestStacks:
		fmt.Fprintf(c, "tbstreamd %s (pid %d), %d goroutines\n", d.opts.Name, os.Getpid(), runtime.NumGoroutine())
		pprof.Lookup("goroutine").WriteTo(c, 2)
	case requestUnplug:
		if cable := d.cable.Load(); cable != nil {
			d.log.Info("cable pulled out on request")
			cable.Close()
			fmt.Fprintln(c, "unplugged")
		} else {
			fmt.Fprintln(c, "no cable plugged")
		}
	}
}

// serveProfile writes a CPU profile or execution trace (start, stop) of
// the next seconds to c; with one already running (another client), it
// writes nothing and the client sees an empty answer.
func (d *Daemon) serveProfile(ctx context.Context, c net.Conn, seconds string, start func(io.Writer) error, stop func()) {
	n, err := strconv.ParseFloat(seconds, 64)
	dur := time.Duration(n * float64(time.Second))
	if err != nil || dur <= 0 || dur > maxProfile {
		return
	}
	c.SetDeadline(time.Now().Add(dur + 5*time.Second))
	if err := start(c); err != nil {
		d.log.Warn("profile refused", "err", err)
		return
	}
	select {
	case <-time.After(dur):
	case <-ctx.Done():
	}
	stop()
}

// ask sends a request to the daemon of run directory run.
func ask(run, request string) (net.Conn, error) {
	if err := checkSocket(StatusPath(run)); err != nil {
		return nil, fmt.Errorf("no tbstreamd at %s: %w", run, err)
	}
	c, err := net.DialTimeout("unix", StatusPath(run), 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no tbstreamd at %s: %w", run, err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request+"\n"); err != nil {
		c.Close()
		return nil, fmt.Errorf("tbstreamd at %s: %w", run, err)
	}
	return c, nil
}

// Unplug pulls the emulated cable of the daemon of run directory run out.
func Unplug(run string) error {
	c, err := ask(run, requestUnplug)
	if err != nil {
		return err
	}
	defer c.Close()
	answer, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("unplug at %s: %w", run, err)
	}
	if answer = strings.TrimSpace(answer); answer != "unplugged" {
		return fmt.Errorf("unplug at %s: %s", run, answer)
	}
	return nil
}

// ReadStatus asks the daemon of run directory run for its status.
func ReadStatus(run string) (Status, error) {
	var st Status
	c, err := ask(run, requestStatus)
	if err != nil {
		return st, err
	}
	defer c.Close()
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		return st, fmt.Errorf("status of tbstreamd at %s: %w", run, err)
	}
	return st, nil
}

// WriteProfile copies a CPU profile (pprof format) of the next dur of the
// daemon of run directory run to w, or with trace an execution trace.
func WriteProfile(w io.Writer, run string, dur time.Duration, trace bool) error {
	if dur <= 0 || dur > maxProfile {
		return fmt.Errorf("profile of %v: between 0 and %v", dur, maxProfile)
	}
	req := requestProfile
	if trace {
		req = requestTrace
	}
	c, err := ask(run, fmt.Sprintf("%s %g", req, dur.Seconds()))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(dur + 10*time.Second))
	n, err := io.Copy(w, c)
	if err == nil && n == 0 {
		err = errors.New("no profile (one is already running?)")
	}
	if err != nil {
		return fmt.Errorf("cpu profile of tbstreamd at %s: %w", run, err)
	}
	return nil
}

// WriteStacks copies the goroutine stacks of the daemon of run directory
// run to w: what it was doing, for a bug report or a stuck test.
func WriteStacks(w io.Writer, run string) error {
	c, err := ask(run, requestStacks)
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := io.Copy(w, c)
	if err == nil && n == 0 {
		err = errors.New("no answer")
	}
	if err != nil {
		return fmt.Errorf("stacks of tbstreamd at %s: %w", run, err)
	}
	return nil
}
