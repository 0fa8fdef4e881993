package cuse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DevFuse is the FUSE channel device.
const DevFuse = "/dev/fuse"

// DirOptions configure a Dir.
type DirOptions struct {
	// MaxIO bounds one READ or WRITE request (default and most: MaxFuseIO,
	// eight times what CUSE allows). Fewer, larger requests are what makes
	// a FUSE file fast: each costs a round trip through the kernel.
	MaxIO int
	// Name is the file system's source and type suffix ("fuse.<Name>" in
	// /proc/mounts; default "tbstream").
	Name   string
	Logger *slog.Logger
	Debug  bool
}

// Dir is a FUSE mount whose regular files are devices, served by the same
// Server as a CUSE node: the fallback for kernels without CUSE, where
// <dir>/tbstreamN stands in for /dev/tbstreamN. Files come and go while
// it is mounted (Add, Remove), as /dev nodes do; handles opened before a
// removal keep working.
//
// The serving process itself must not open its files with os.Open or
// os.OpenFile: Go registers such a file with its netpoller by an
// epoll_ctl(2) the runtime does not count as a system call, the kernel
// then waits for the server's answer to a POLL, and a stop-the-world (a
// GC) meanwhile deadlocks the process. Raw descriptors (unix.Open, and
// os.NewFile of a blocking one, which is not polled) are safe; so is
// another process.
type Dir struct {
	path string
	srv  *Server
	tree *tree
	conn uint64 // the mount's st_dev: its connection's name in fusectl
}

// MountDir mounts an empty Dir on path (which must exist) and serves it
// until Unmount. It mounts with mount(2), so it needs root or
// CAP_SYS_ADMIN and no fusermount. Other users may open a file as its
// mode and owner allow (allow_other, default_permissions).
func MountDir(path string, opts DirOptions) (*Dir, error) {
	if opts.Name == "" {
		opts.Name = "tbstream"
	}
	fd, err := unix.Open(DevFuse, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount %s: open %s: %w", path, DevFuse, err)
	}
	size := clampIO(opts.MaxIO, MaxFuseIO)
	data := "fd=" + strconv.Itoa(fd) + ",rootmode=40755,user_id=0,group_id=0,allow_other,default_permissions,max_read=" + strconv.Itoa(size)
	if err := unix.Mount(opts.Name, path, "fuse."+opts.Name, unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount %s: %w", path, err)
	}
	ch := &fdChannel{fd: fd}
	t := newTree()
	s := newServer(ch, Options{Name: opts.Name, MaxRead: size, MaxWrite: size, Logger: opts.Logger, Debug: opts.Debug}, MaxFuseIO)
	s.log = s.log.With("mount", path)
	s.fs = t
	d := &Dir{path: path, srv: s, tree: t}
	ctx, cancel := context.WithTimeout(context.Background(), initTimeout)
	defer cancel()
	initErr := make(chan error, 1)
	go func() { initErr <- s.Init(ctx) }()
	select {
	case err = <-initErr:
	case <-ctx.Done():
		err = errors.New("no INIT from the kernel")
	}
	if err != nil {
		unix.Unmount(path, unix.MNT_DETACH)
		s.Close()
		ch.release()
		return nil, fmt.Errorf("mount %s: %w", path, err)
	}
	go s.Serve(context.Background()) // its end is Unmount's: it logs why, if not
	// Served now (the kernel sends this stat to the server).
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		d.Unmount()
		return nil, fmt.Errorf("mount %s: %w", path, err)
	}
	d.conn = st.Dev
	return d, nil
}

// initTimeout bounds the wait for the kernel's INIT after mount(2) (it is
// queued by the mount itself).
const initTimeout = 10 * time.Second

// Add makes name serve f; EEXIST if name is there already, EINVAL for a
// name that cannot be a file name.
func (d *Dir) Add(name string, f File) error {
	if err := d.tree.add(name, f); err != nil {
		return err
	}
	d.srv.invalEntry(name) // a negative entry the kernel may still trust
	return nil
}

// Remove takes name away: new opens fail with ENOENT, open handles go on.
func (d *Dir) Remove(name string) {
	d.tree.remove(name)
	d.srv.invalEntry(name)
}

// SetBuffers has the mount's request readers borrow the memory WRITE
// payloads are read into from wb (see WriteBufferer), for whichever file
// the request turns out to be for: every Device of the mount must accept
// wb's buffers in its Write. Readers ask from their next request on.
func (d *Dir) SetBuffers(wb WriteBufferer) { d.srv.buffers.Store(wb) }

// Stats returns the server's counters.
func (d *Dir) Stats() *Stats { return d.srv.Stats() }

// Path is where the directory is mounted.
func (d *Dir) Path() string { return d.path }

// Unmount detaches the mount and ends serving: handles still open are
// released, and their users' next call fails with ENOTCONN.
func (d *Dir) Unmount() error {
	d.srv.cancel() // what the readers see from here on is the end
	err := unix.Unmount(d.path, 0)
	if errors.Is(err, syscall.EBUSY) {
		// Files are open: the connection outlives a lazy unmount, and
		// readers stay blocked in read(2) until it is aborted.
		err = unix.Unmount(d.path, unix.MNT_DETACH)
		if aerr := abortConn(d.conn); aerr != nil {
			d.srv.log.Error("cannot abort the FUSE connection; serving goes on until its last file is closed", "err", aerr)
		}
	}
	d.srv.Close()
	d.srv.ch.(*fdChannel).release() // no reader is left in read(2)
	if err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount %s: %w", d.path, err)
	}
	return nil
}

// fuseCtl is where the fusectl file system lists FUSE connections.
const fuseCtl = "/sys/fs/fuse/connections"

// abortConn aborts the FUSE connection of device dev through fusectl
// (mounting it if it is not), as "echo 1 > .../abort" would: every
// request fails, and reads of the channel return ENODEV.
func abortConn(dev uint64) error {
	name := strconv.FormatUint(uint64(unix.Minor(dev)), 10)
	if unix.Major(dev) != 0 {
		name = strconv.FormatUint(dev, 10)
	}
	abort := fuseCtl + "/" + name + "/abort"
	if _, err := os.Stat(abort); errors.Is(err, os.ErrNotExist) {
		if err := unix.Mount("fusectl", fuseCtl, "fusectl", 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("mount fusectl: %w", err)
		}
	}
	f, err := os.OpenFile(abort, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString("1")
	return err
}

// fdChannel is a Channel over /dev/fuse in blocking mode: a request wakes
// the thread of one reader blocked in read(2) directly, several µs sooner
// than the netpoller would, and nothing is allocated per message. Close
// cannot end a read(2) in progress; the mount's end does (unmount, or
// the abort Unmount makes), and the descriptor is closed by release, once
// the server's readers are gone, so that its number cannot be reused
// under a reader.
type fdChannel struct {
	fd     int
	closed atomic.Bool
	iovecs sync.Pool // *[]unix.Iovec
}

func (c *fdChannel) ReadRequest(iov [][]byte) (int, error) {
	for {
		if c.closed.Load() {
			return 0, os.ErrClosed
		}
		n, err := c.rw(unix.SYS_READV, iov)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func (c *fdChannel) WriteReply(iov [][]byte) error {
	if c.closed.Load() {
		return os.ErrClosed
	}
	for {
		_, err := c.rw(unix.SYS_WRITEV, iov)
		if err != unix.EINTR {
			return err
		}
	}
}

// rw is readv or writev with an iovec array from a pool: unix.Readv
// allocates one for more than 8 buffers, and a request read into lent
// buffers has up to 257.
func (c *fdChannel) rw(trap uintptr, iov [][]byte) (int, error) {
	vp, _ := c.iovecs.Get().(*[]unix.Iovec)
	if vp == nil {
		vp = new([]unix.Iovec)
	}
	v := (*vp)[:0]
	for _, b := range iov {
		if len(b) == 0 {
			continue
		}
		e := unix.Iovec{Base: &b[0]}
		e.SetLen(len(b))
		v = append(v, e)
	}
	n, _, errno := unix.Syscall(trap, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(v))), uintptr(len(v)))
	clear(v)
	*vp = v[:0]
	c.iovecs.Put(vp)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func (c *fdChannel) Close() error {
	c.closed.Store(true)
	return nil
}

// release closes the descriptor; the server's readers must be gone.
func (c *fdChannel) release() {
	c.closed.Store(true)
	unix.Close(c.fd)
}
