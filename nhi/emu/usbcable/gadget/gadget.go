package gadget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"tbstream/nhi/emu/usbcable"
)

// Kernel places.
const (
	// GadgetRoot is where configfs keeps USB gadgets.
	GadgetRoot = "/sys/kernel/config/usb_gadget"
	// UDCClass lists the USB device controllers.
	UDCClass = "/sys/class/udc"
)

// Config says what gadget to make.
type Config struct {
	// Name of the gadget directory and FunctionFS instance ("tbstream").
	Name string
	// UDC is the device controller to bind ("dummy_udc.0"); empty: the
	// only one in /sys/class/udc (an error if there are several).
	UDC string
	// ID is the vendor and product ID (usbcable.DefaultID if zero).
	ID usbcable.ID
	// Serial is the serial number string (the host's name, say).
	Serial string
	// MountDir is where FunctionFS is mounted (created if missing).
	MountDir string
	Logger   *slog.Logger
}

// Gadget is a gadget made and bound; Close removes it.
type Gadget struct {
	cfg  Config
	dir  string // GadgetRoot/<name>
	log  *slog.Logger
	ep0  int
	in   int // ep1: bulk IN, written
	out  int // ep2: bulk OUT, read
	udc  string
	evc  chan event // events from ep0, in order
	done chan struct{}
	// evDone is closed when readEvents returns.
	evDone chan struct{}
	// mu guards sess, closed and bound.
	mu     sync.Mutex
	sess   *session
	closed bool
	bound  bool // the UDC is written
}

// Start makes the gadget: a stale one of the same name goes first (a
// daemon that died left it), then configfs, FunctionFS, the descriptors
// and the UDC, in that order. On error everything made is removed.
func Start(cfg Config) (*Gadget, error) {
	if cfg.Name == "" {
		cfg.Name = "tbstream"
	}
	if cfg.ID == (usbcable.ID{}) {
		cfg.ID = usbcable.DefaultID
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Serial == "" {
		cfg.Serial = "0"
	}
	g := &Gadget{cfg: cfg, dir: filepath.Join(GadgetRoot, cfg.Name), log: cfg.Logger, ep0: -1, in: -1, out: -1,
		evc: make(chan event, 16), done: make(chan struct{}), evDone: make(chan struct{})}
	if _, err := os.Stat(GadgetRoot); err != nil {
		return nil, fmt.Errorf("usb gadget: %s: %w (mount configfs on /sys/kernel/config, modprobe libcomposite; the kernel needs CONFIG_USB_CONFIGFS_F_FS and a UDC)", GadgetRoot, err)
	}
	udc, err := pickUDC(cfg.UDC)
	if err != nil {
		return nil, err
	}
	g.udc = udc
	if _, err := os.Stat(g.dir); err == nil {
		g.log.Warn("usb gadget: removing a stale gadget left by an earlier run", "dir", g.dir)
		g.remove()
	}
	if err := g.make(); err != nil {
		g.remove()
		close(g.evDone)
		return nil, fmt.Errorf("usb gadget %s: %w", cfg.Name, err)
	}
	go g.readEvents()
	if err := g.bind(); err != nil {
		g.Close()
		return nil, err
	}
	g.log.Info("usb gadget bound", "udc", udc, "id", cfg.ID.String(), "functionfs", cfg.MountDir)
	return g, nil
}

// pickUDC checks the UDC asked for, or finds the only one.
func pickUDC(want string) (string, error) {
	ents, err := os.ReadDir(UDCClass)
	if err != nil {
		return "", fmt.Errorf("usb gadget: no USB device controller (%w); modprobe a UDC driver (dummy_hcd for a test)", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want != "" {
		for _, n := range names {
			if n == want {
				return n, nil
			}
		}
		return "", fmt.Errorf("usb gadget: no UDC %q in %s (have: %s)", want, UDCClass, strings.Join(names, " "))
	}
	switch len(names) {
	case 0:
		return "", fmt.Errorf("usb gadget: %s is empty; modprobe a UDC driver (dummy_hcd for a test)", UDCClass)
	case 1:
		return names[0], nil
	}
	return "", fmt.Errorf("usb gadget: several UDCs (%s): name one, -cable usb-gadget:UDC", strings.Join(names, " "))
}

func (g *Gadget) path(p ...string) string { return filepath.Join(append([]string{g.dir}, p...)...) }

func (g *Gadget) function() string { return "ffs." + g.cfg.Name }

func write(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return err
	}
	return nil
}

// make builds the configfs tree, mounts FunctionFS and writes ep0.
func (g *Gadget) make() error {
	steps := []struct{ dir, file, value string }{
		{g.dir, "", ""},
		{"", g.path("idVendor"), fmt.Sprintf("0x%04x", g.cfg.ID.Vendor)},
		{"", g.path("idProduct"), fmt.Sprintf("0x%04x", g.cfg.ID.Product)},
		{"", g.path("bcdDevice"), "0x0100"},
		{"", g.path("bcdUSB"), "0x0200"},
		{g.path("strings", "0x409"), "", ""},
		{"", g.path("strings", "0x409", "manufacturer"), "tbstream"},
		{"", g.path("strings", "0x409", "product"), "tbstream USB cable"},
		{"", g.path("strings", "0x409", "serialnumber"), g.cfg.Serial},
		{g.path("configs", "c.1"), "", ""},
		{"", g.path("configs", "c.1", "MaxPower"), "120"},
		{g.path("configs", "c.1", "strings", "0x409"), "", ""},
		{"", g.path("configs", "c.1", "strings", "0x409", "configuration"), "tbstream"},
		{g.path("functions", g.function()), "", ""},
	}
	for _, s := range steps {
		if s.dir != "" {
			if err := os.Mkdir(s.dir, 0o755); err != nil {
				return err
			}
		} else if err := write(s.file, s.value); err != nil {
			return err
		}
	}
	if err := os.Symlink(g.path("functions", g.function()), g.path("configs", "c.1", g.function())); err != nil {
		return err
	}
	if err := os.MkdirAll(g.cfg.MountDir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(g.cfg.Name, g.cfg.MountDir, "functionfs", 0, ""); err != nil {
		return fmt.Errorf("mount functionfs %s on %s: %w (modprobe usb_f_fs)", g.cfg.Name, g.cfg.MountDir, err)
	}
	var err error
	if g.ep0, err = syscall.Open(filepath.Join(g.cfg.MountDir, "ep0"), syscall.O_RDWR|syscall.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open ep0: %w", err)
	}
	if _, err := syscall.Write(g.ep0, descriptorsBlob()); err != nil {
		return fmt.Errorf("ep0: write descriptors: %w", err)
	}
	if _, err := syscall.Write(g.ep0, stringsBlob()); err != nil {
		return fmt.Errorf("ep0: write strings: %w", err)
	}
	// Non-blocking: on a disabled endpoint I/O fails at once (EAGAIN)
	// instead of waiting for the next session (see the package doc).
	if g.in, err = syscall.Open(filepath.Join(g.cfg.MountDir, "ep1"), syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0); err != nil {
		return fmt.Errorf("open ep1: %w", err)
	}
	if g.out, err = syscall.Open(filepath.Join(g.cfg.MountDir, "ep2"), syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0); err != nil {
		return fmt.Errorf("open ep2: %w", err)
	}
	return nil
}

func (g *Gadget) bind() error {
	if err := write(g.path("UDC"), g.udc); err != nil {
		return fmt.Errorf("usb gadget: bind %s: %w", g.udc, err)
	}
	g.mu.Lock()
	g.bound = true
	g.mu.Unlock()
	return nil
}

func (g *Gadget) unbind() {
	g.mu.Lock()
	g.bound = false
	g.mu.Unlock()
	if err := write(g.path("UDC"), "\n"); err != nil && !errors.Is(err, syscall.ENODEV) {
		g.log.Debug("usb gadget: unbind", "err", err)
	}
}

// rebind unbinds and binds the UDC: the host sees an unplug and a plug.
func (g *Gadget) rebind() {
	g.unbind()
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return
	}
	if err := g.bind(); err != nil {
		g.log.Warn("usb gadget: rebind failed", "err", err)
	}
}

// remove takes the gadget apart in the reverse order of make, ignoring
// what is not there. The UDC must be unbound and the files closed.
func (g *Gadget) remove() {
	write(g.path("UDC"), "\n")
	for _, fd := range []*int{&g.in, &g.out, &g.ep0} {
		if *fd >= 0 {
			syscall.Close(*fd)
			*fd = -1
		}
	}
	if g.cfg.MountDir != "" {
		syscall.Unmount(g.cfg.MountDir, syscall.MNT_DETACH)
	}
	os.Remove(g.path("configs", "c.1", g.function()))
	os.Remove(g.path("configs", "c.1", "strings", "0x409"))
	os.Remove(g.path("configs", "c.1"))
	os.Remove(g.path("functions", g.function()))
	os.Remove(g.path("strings", "0x409"))
	if err := os.Remove(g.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		g.log.Warn("usb gadget: could not remove", "dir", g.dir, "err", err)
	}
}

// readEvents reads ep0 until the gadget closes, stalling SETUPs and
// passing the other events on.
func (g *Gadget) readEvents() {
	defer close(g.evDone)
	buf := make([]byte, 4*ffsEventSize)
	var failing error // the last read error logged, until a read works
	for {
		n, err := syscall.Read(g.ep0, buf)
		select {
		case <-g.done:
			return
		default:
		}
		if err != nil {
			if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EIDRM) {
				continue
			}
			if failing == nil || err.Error() != failing.Error() {
				g.log.Warn("usb gadget: ep0 read failed", "err", err)
				failing = err
			}
			select {
			case <-g.done:
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		failing = nil
		for _, ev := range parseEvents(buf[:n]) {
			g.log.Debug("usb gadget: event", "type", ev.Type.String())
			if ev.Type == eventSetup {
				g.stall(ev)
				continue
			}
			g.handle(ev)
		}
	}
}

// stall refuses a control request: the transfer in the wrong direction
// (FunctionFS answers EL2HLT and halts ep0).
func (g *Gadget) stall(ev event) {
	g.log.Debug("usb gadget: stalling a control request", "bRequestType", ev.RequestType, "bRequest", ev.Request)
	if ev.RequestType&0x80 != 0 {
		syscall.Read(g.ep0, nil)
	} else {
		syscall.Write(g.ep0, nil)
	}
}

// handle ends the session at DISABLE or UNBIND and starts one at ENABLE.
func (g *Gadget) handle(ev event) {
	switch ev.Type {
	case eventEnable, eventDisable, eventUnbind:
	default:
		return
	}
	g.mu.Lock()
	old := g.sess
	g.sess = nil
	g.mu.Unlock()
	if old != nil {
		old.hostEnded()
	}
	if ev.Type == eventEnable {
		select {
		case g.evc <- ev:
		default:
			g.log.Warn("usb gadget: ENABLE dropped, Accept is not keeping up")
		}
	}
}

// Accept waits until the host enables the function and returns the
// session's bulk pipe. The previous session's Conn must be closed first.
func (g *Gadget) Accept(ctx context.Context) (*usbcable.Conn, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-g.done:
			return nil, usbcable.ErrClosed
		case <-g.evc:
		}
		// Only the latest ENABLE counts.
		select {
		case <-g.evc:
			continue
		default:
		}
		s := &session{g: g, ended: make(chan struct{})}
		g.mu.Lock()
		g.sess = s
		g.mu.Unlock()
		return usbcable.NewConn(s), nil
	}
}

// Close unbinds the UDC and removes the gadget.
func (g *Gadget) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	s := g.sess
	g.mu.Unlock()
	close(g.done)
	g.unbind() // ends epN I/O (ESHUTDOWN) and queues UNBIND, ending readEvents
	if s != nil {
		s.hostEnded()
	}
	// UNBIND wakes readEvents; a gadget that never bound has none to
	// send: its reader stays blocked in read(2) on ep0 (closing the fd
	// does not wake it) until the process exits.
	select {
	case <-g.evDone:
	case <-time.After(time.Second):
	}
	g.remove()
	g.log.Info("usb gadget removed", "name", g.cfg.Name)
	return nil
}

// session is one ENABLE..DISABLE: a usbcable.Transport on the endpoint
// files.
type session struct {
	g     *Gadget
	once  sync.Once
	ended chan struct{} // closed when the session ends, by either side
	// byHost: the host ended it (DISABLE, UNBIND): no rebind needed.
	mu     sync.Mutex
	byHost bool
	// rq and wq are the bulk OUT and IN queues, made at the first
	// transfer; only Conn's reader (rq) and writer (wq) touch them.
	rq, wq *aioQueue
}

var errSessionEnded = errors.New("the USB host disabled the function (unplugged)")

func (s *session) isEnded() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

func (s *session) hostEnded() {
	s.mu.Lock()
	s.byHost = true
	s.mu.Unlock()
	s.once.Do(func() { close(s.ended) })
}

// ioErr turns an endpoint error into a session's end. EAGAIN (the
// endpoint is disabled) and ESHUTDOWN (disabled during the transfer) mean
// the host ended it, whether or not DISABLE was read yet: Close must not
// rebind then, or every host-side reset would be answered by an unplug.
func (s *session) ioErr(err error) error {
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ESHUTDOWN) {
		s.hostEnded()
		return fmt.Errorf("%w (%v)", errSessionEnded, err)
	}
	return err
}

// ReadTransfer keeps transfersInFlight bulk OUT reads queued and returns
// the oldest's bytes.
func (s *session) ReadTransfer(p []byte) (int, error) {
	if s.isEnded() {
		return 0, errSessionEnded
	}
	if s.rq == nil {
		q, err := newAIOQueue(s.g.out, iocbCmdPread, s.ended)
		if err != nil {
			return 0, err
		}
		s.rq = q
		for _, sl := range q.free {
			if err := q.submit(sl, len(sl.buf)); err != nil {
				return 0, s.ioErr(err)
			}
		}
		q.free = nil
	}
	sl, err := s.rq.oldest()
	if sl == nil && err == nil {
		err = errSessionEnded // a resubmission failed
	}
	if err != nil {
		return 0, s.ioErr(err)
	}
	n, err := sl.result()
	if err != nil {
		return 0, s.ioErr(err)
	}
	copy(p, sl.buf[:n])
	// A failed resubmission ends the session at the next call, once
	// the reads before it are taken.
	if err := s.rq.submit(sl, len(sl.buf)); err != nil {
		s.rq.free = append(s.rq.free, sl)
	}
	return n, nil
}

// WriteTransfer queues p as one bulk IN transfer and returns; with
// transfersInFlight queued, it first waits for the oldest. A transfer that
// failed or moved less than it was given ends the session at the write
// that finds it.
func (s *session) WriteTransfer(p []byte) error {
	if s.isEnded() {
		return errSessionEnded
	}
	if s.wq == nil {
		q, err := newAIOQueue(s.g.in, iocbCmdPwrite, s.ended)
		if err != nil {
			return err
		}
		s.wq = q
	}
	q := s.wq
	var sl *aioSlot
	if n := len(q.free); n > 0 {
		sl, q.free = q.free[n-1], q.free[:n-1]
	} else {
		var err error
		if sl, err = q.oldest(); err != nil {
			return s.ioErr(err)
		}
		n, err := sl.result()
		if err != nil {
			return s.ioErr(err)
		}
		if n != int(sl.cb.nbytes) {
			return fmt.Errorf("short bulk IN write: %d of %d bytes", n, sl.cb.nbytes)
		}
	}
	copy(sl.buf, p)
	if err := q.submit(sl, len(p)); err != nil {
		return s.ioErr(err)
	}
	return nil
}

// MaxPacket: the gadget does not know the speed the host chose; 64 (full
// speed) divides the others, so a ZLP follows every write that could need
// one (one more than needed at most, which the host reads as an empty
// transfer).
func (s *session) MaxPacket() int { return maxPacketFS }

func (s *session) Name() string { return "usb gadget " + s.g.udc }

// Close ends the session; if the host did not end it, the UDC is unbound
// and bound again, which ends the I/O in flight and shows the host an
// unplug.
func (s *session) Close() error {
	first := false
	s.once.Do(func() { first = true; close(s.ended) })
	s.mu.Lock()
	byHost := s.byHost
	s.mu.Unlock()
	if first && !byHost {
		s.g.mu.Lock()
		if s.g.sess == s {
			s.g.sess = nil
		}
		s.g.mu.Unlock()
		go s.g.rebind()
	}
	return nil
}
