package fakekernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"tbstream/cuse"
)

// CuseUnrestrictedIoctl is CUSE_UNRESTRICTED_IOCTL (fuse_kernel.h), the
// cuse_init_in flag the kernel offers and a server may accept.
const CuseUnrestrictedIoctl uint32 = 1 << 0

// Config describes the kernel being faked.
type Config struct {
	// Major and Minor are offered in CUSE_INIT (default 7.38, Debian 12's).
	Major, Minor uint32
	// Flags are the cuse_init_in flags offered (default CUSE_UNRESTRICTED_IOCTL).
	Flags *uint32
	// DevDir, if set, receives the stand-in device node.
	DevDir string
	// Caller is put in every request header (default uid 0, gid 0, pid 1).
	Caller cuse.Caller
}

// InitReply is the server's CUSE_INIT answer as the kernel understood it.
type InitReply struct {
	Out     cuse.CuseInitOut
	DevInfo map[string]string
	// MaxRead and MaxWrite after the kernel's 4096 floor.
	MaxRead, MaxWrite int
}

// Reply is the server's answer to one request.
type Reply struct {
	Errno syscall.Errno
	Body  []byte
}

// Call is one request in flight.
type Call struct {
	Unique uint64
	Op     uint32
	done   chan struct{}
	reply  Reply
}

// Wait returns the reply, or ctx's error when none comes (a hang).
func (c *Call) Wait(ctx context.Context) (Reply, error) {
	select {
	case <-c.done:
		return c.reply, nil
	case <-ctx.Done():
		return Reply{}, fmt.Errorf("%s unique %d: no reply: %w", cuse.OpName(c.Op), c.Unique, ctx.Err())
	}
}

// Done is closed when the reply has arrived.
func (c *Call) Done() <-chan struct{} { return c.done }

// Kernel is the fake kernel end of one connection.
type Kernel struct {
	cfg  Config
	kfd  *os.File // kernel end
	sfd  *os.File // server end
	ch   *channel
	acks chan error // one verdict per message the server wrote, in order

	mu struct {
		sync.Mutex
		next        uint64
		pending     map[uint64]*Call // unique → call
		interrupts  map[uint64]*Call // unique|1 → the interrupted call
		maxWrite    int
		devName     string
		node        string
		violations  []error
		notify      []uint64
		invalidated []string
		notifyCh    chan struct{} // closed and replaced on every notification
		closed      bool
	}
	readerDone chan struct{}
}

// New creates the socketpair and starts the kernel's reader.
func New(cfg Config) (*Kernel, error) {
	if cfg.Major == 0 {
		cfg.Major, cfg.Minor = cuse.KernelVersion, 38
	}
	if cfg.Flags == nil {
		f := CuseUnrestrictedIoctl
		cfg.Flags = &f
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("fake kernel: socketpair: %w", err)
	}
	k := &Kernel{
		cfg:        cfg,
		kfd:        os.NewFile(uintptr(fds[0]), "fake-kernel"),
		sfd:        os.NewFile(uintptr(fds[1]), "fake-dev-cuse"),
		acks:       make(chan error, 1),
		readerDone: make(chan struct{}),
	}
	k.ch = &channel{k: k, f: cuse.NewFileChannel(k.sfd)}
	k.mu.pending = map[uint64]*Call{}
	k.mu.interrupts = map[uint64]*Call{}
	k.mu.notifyCh = make(chan struct{})
	go k.reader()
	return k, nil
}

// Channel is the server's end of the connection.
func (k *Kernel) Channel() cuse.Channel { return k.ch }

// Close ends the connection from the kernel side, as an abort would.
func (k *Kernel) Close() error {
	err := k.kfd.Close()
	<-k.readerDone
	return err
}

// Violations returns the protocol errors the server made so far.
func (k *Kernel) Violations() []error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]error(nil), k.mu.violations...)
}

func (k *Kernel) violation(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	k.mu.Lock()
	k.mu.violations = append(k.mu.violations, err)
	k.mu.Unlock()
	return err
}

// Node is the path of the stand-in node, "" when there is none.
func (k *Kernel) Node() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.mu.node
}

// Start sends a request and returns without waiting for the reply.
func (k *Kernel) Start(op uint32, body, payload []byte) (*Call, error) {
	k.mu.Lock()
	k.mu.next += 2 // FUSE_REQ_ID_STEP
	c := &Call{Unique: k.mu.next, Op: op, done: make(chan struct{})}
	k.mu.pending[c.Unique] = c
	k.mu.Unlock()
	if err := k.sendRequest(op, c.Unique, body, payload); err != nil {
		k.mu.Lock()
		delete(k.mu.pending, c.Unique)
		k.mu.Unlock()
		return nil, err
	}
	return c, nil
}

// SendRaw sends bytes as one message, unchecked, for malformed-input
// tests. An empty message is refused: on the socketpair it would read as
// the end of the connection, and the kernel never sends one.
func (k *Kernel) SendRaw(msg []byte) error {
	if len(msg) == 0 {
		return errors.New("fake kernel: empty message")
	}
	_, err := k.kfd.Write(msg)
	return err
}

func (k *Kernel) sendRequest(op uint32, unique uint64, body, payload []byte) error {
	hdr := make([]byte, cuse.InHeaderSize)
	le := binary.LittleEndian
	le.PutUint32(hdr[0:], uint32(len(hdr)+len(body)+len(payload)))
	le.PutUint32(hdr[4:], op)
	le.PutUint64(hdr[8:], unique)
	// nodeid 0: CUSE has no inodes.
	le.PutUint32(hdr[24:], k.cfg.Caller.UID)
	le.PutUint32(hdr[28:], k.cfg.Caller.GID)
	pid := k.cfg.Caller.PID
	if pid == 0 {
		pid = 1
	}
	le.PutUint32(hdr[32:], pid)
	msg := append(append(hdr, body...), payload...)
	if _, err := k.kfd.Write(msg); err != nil {
		return fmt.Errorf("fake kernel: send %s: %w", cuse.OpName(op), err)
	}
	return nil
}

// Interrupt sends INTERRUPT for c, as the kernel does when the waiting
// process gets a signal. It is re-sent whenever the server answers EAGAIN.
func (k *Kernel) Interrupt(c *Call) error {
	k.mu.Lock()
	k.mu.interrupts[c.Unique|1] = c
	k.mu.Unlock()
	return k.sendInterrupt(c.Unique)
}

func (k *Kernel) sendInterrupt(unique uint64) error {
	body := make([]byte, cuse.InterruptInSize)
	binary.LittleEndian.PutUint64(body, unique)
	return k.sendRequest(cuse.OpInterrupt, unique|1, body, nil)
}

// Notifications returns the kh values of NOTIFY_POLL messages received so
// far and a channel closed at the next one.
func (k *Kernel) Notifications() ([]uint64, <-chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]uint64(nil), k.mu.notify...), k.mu.notifyCh
}

// reader receives every message the server writes, checks it and tells the
// writing channel the verdict.
func (k *Kernel) reader() {
	defer close(k.readerDone)
	buf := make([]byte, 1<<20)
	for {
		n, err := k.kfd.Read(buf)
		if err != nil || n == 0 {
			k.serverGone()
			return
		}
		verdict := k.process(append([]byte(nil), buf[:n]...))
		select {
		case k.acks <- verdict:
		default:
			// Nobody waits: a message written around the channel.
		}
	}
}

// serverGone is cuse_channel_release: the node goes, waiters are failed.
func (k *Kernel) serverGone() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.mu.closed = true
	if k.mu.node != "" {
		os.Remove(k.mu.node)
		k.mu.node = ""
	}
	for u, c := range k.mu.pending {
		c.reply = Reply{Errno: syscall.ECONNABORTED}
		close(c.done)
		delete(k.mu.pending, u)
	}
}

// notifyInvalEntry is FUSE_NOTIFY_INVAL_ENTRY, which a FUSE server (a
// cuse.Dir) sends when a name appears or goes.
const notifyInvalEntry = 3

// invalEntry checks a FUSE_NOTIFY_INVAL_ENTRY body as
// fuse_notify_inval_entry does: struct fuse_notify_inval_entry_out
// {parent, namelen, flags}, then the name and a NUL. The fake caches no
// entry, so there is nothing to drop; the name is recorded.
func (k *Kernel) invalEntry(body []byte) error {
	const fixed = 16
	if len(body) < fixed {
		return k.violation("NOTIFY_INVAL_ENTRY of %d bytes: %w", len(body), syscall.EINVAL)
	}
	n := int(binary.LittleEndian.Uint32(body[8:]))
	if n > 1024 || len(body) != fixed+n+1 || body[fixed+n] != 0 {
		return k.violation("NOTIFY_INVAL_ENTRY: namelen %d in %d bytes (% x): %w", n, len(body), body[:min(len(body), 64)], syscall.EINVAL)
	}
	k.mu.Lock()
	k.mu.invalidated = append(k.mu.invalidated, string(body[fixed:fixed+n]))
	k.mu.Unlock()
	return nil
}

// Invalidated returns the names of the FUSE_NOTIFY_INVAL_ENTRY
// notifications received so far.
func (k *Kernel) Invalidated() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.mu.invalidated...)
}

// process applies fuse_dev_do_write's checks and routes the message.
func (k *Kernel) process(msg []byte) error {
	if len(msg) < cuse.OutHeaderSize {
		return k.violation("reply of %d bytes, shorter than fuse_out_header: %w", len(msg), syscall.EINVAL)
	}
	le := binary.LittleEndian
	length, status, unique := le.Uint32(msg[0:]), int32(le.Uint32(msg[4:])), le.Uint64(msg[8:])
	if int(length) != len(msg) {
		return k.violation("reply length field %d, wrote %d: %w", length, len(msg), syscall.EINVAL)
	}
	if unique == 0 {
		if status == notifyInvalEntry {
			return k.invalEntry(msg[cuse.OutHeaderSize:])
		}
		if status != cuse.NotifyPoll || len(msg) != cuse.OutHeaderSize+cuse.NotifyPollOutLen {
			return k.violation("notification code %d, %d bytes (% x): %w", status, len(msg), msg[:min(len(msg), 64)], syscall.EINVAL)
		}
		k.mu.Lock()
		k.mu.notify = append(k.mu.notify, le.Uint64(msg[cuse.OutHeaderSize:]))
		close(k.mu.notifyCh)
		k.mu.notifyCh = make(chan struct{})
		k.mu.Unlock()
		return nil
	}
	if status > 0 || status < -511 {
		return k.violation("reply to %d: error %d out of range: %w", unique, status, syscall.EINVAL)
	}
	errno := syscall.Errno(-status)
	k.mu.Lock()
	if unique&1 != 0 {
		c := k.mu.interrupts[unique]
		delete(k.mu.interrupts, unique)
		_, live := k.mu.pending[unique&^1]
		k.mu.Unlock()
		if c == nil {
			return syscall.ENOENT
		}
		if errno != syscall.EAGAIN {
			return k.violation("INTERRUPT %d answered %v; only EAGAIN may answer an INTERRUPT: %w", unique, errno, syscall.EINVAL)
		}
		if live {
			k.mu.Lock()
			k.mu.interrupts[unique] = c
			k.mu.Unlock()
			return k.sendInterrupt(c.Unique)
		}
		return nil
	}
	c := k.mu.pending[unique]
	delete(k.mu.pending, unique)
	k.mu.Unlock()
	if c == nil {
		return syscall.ENOENT
	}
	if c.Op == cuse.OpCuseInit {
		if err := k.checkInit(errno, msg[cuse.OutHeaderSize:]); err != nil {
			c.reply = Reply{Errno: syscall.EPROTO}
			close(c.done)
			return err
		}
	}
	c.reply = Reply{Errno: errno, Body: msg[cuse.OutHeaderSize:]}
	close(c.done)
	return nil
}

// checkInit is cuse_process_init_reply and cuse_parse_devinfo.
func (k *Kernel) checkInit(errno syscall.Errno, body []byte) error {
	if errno != 0 {
		return k.violation("CUSE_INIT failed: %v", errno)
	}
	out, err := cuse.DecodeCuseInitOut(body)
	if err != nil {
		return k.violation("CUSE_INIT reply: %w", err)
	}
	if out.Major != cuse.KernelVersion || out.Minor < cuse.MinKernelMinor {
		return k.violation("CUSE_INIT reply: protocol %d.%d, need 7.11+", out.Major, out.Minor)
	}
	info, err := cuse.ParseDevInfo(body[cuse.CuseInitOutSize:])
	if err != nil {
		return k.violation("CUSE_INIT reply: devinfo: %w", err)
	}
	name := info["DEVNAME"]
	if name == "" {
		return k.violation("CUSE_INIT reply: no DEVNAME")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.mu.maxWrite = max(int(out.MaxWrite), cuse.MinMaxIO)
	k.mu.devName = name
	if k.cfg.DevDir != "" {
		p := filepath.Join(k.cfg.DevDir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return fmt.Errorf("fake devtmpfs: %w", err)
		}
		k.mu.node = p
	}
	return nil
}

// channel is the server's end with the kernel's rules applied.
type channel struct {
	k  *Kernel
	f  cuse.Channel
	wm sync.Mutex // one reply at a time, so verdicts pair with messages
}

func (c *channel) ReadRequest(iov [][]byte) (int, error) {
	c.k.mu.Lock()
	need := max(cuse.MinReadBuffer, cuse.RequestHeadSize+c.k.mu.maxWrite)
	c.k.mu.Unlock()
	size := 0
	for _, b := range iov {
		size += len(b)
	}
	if size < need {
		return 0, c.k.violation("read into %d bytes, kernel needs %d: %w", size, need, syscall.EINVAL)
	}
	n, err := c.f.ReadRequest(iov)
	if err == nil && n == 0 {
		return 0, syscall.ENODEV // kernel end closed: the connection is gone
	}
	return n, err
}

func (c *channel) WriteReply(iov [][]byte) error {
	c.wm.Lock()
	defer c.wm.Unlock()
	c.k.mu.Lock()
	closed := c.k.mu.closed
	c.k.mu.Unlock()
	if closed {
		return syscall.ENODEV
	}
	if err := c.f.WriteReply(iov); err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			return syscall.ENODEV
		}
		return err
	}
	select {
	case err := <-c.k.acks:
		return err
	case <-c.k.readerDone:
		select { // the message may have been processed before the end
		case err := <-c.k.acks:
			return err
		default:
			return syscall.ENODEV
		}
	}
}

func (c *channel) Close() error { return c.f.Close() }

// Reserve allocates a unique for a request that is not sent yet, so a test
// can make an INTERRUPT overtake its request; send it with Send.
func (k *Kernel) Reserve(op uint32) *Call {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.mu.next += 2
	c := &Call{Unique: k.mu.next, Op: op, done: make(chan struct{})}
	k.mu.pending[c.Unique] = c
	return c
}

// Send sends a reserved request.
func (k *Kernel) Send(c *Call, body, payload []byte) error {
	return k.sendRequest(c.Op, c.Unique, body, payload)
}

// Forget drops a request as the kernel does when its caller is gone: the
// server's reply to it then fails with ENOENT.
func (k *Kernel) Forget(c *Call) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.mu.pending, c.Unique)
}
