package cuse

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DevCuse is the CUSE channel device.
const DevCuse = "/dev/cuse"

// A Channel carries whole messages between the kernel and the server: one
// request per ReadRequest, one reply or notification per WriteReply. The
// real one is an open /dev/cuse; the fake kernel (cuse/fakekernel) provides
// one over a SOCK_SEQPACKET socketpair.
type Channel interface {
	// ReadRequest reads one request into iov (readv) and returns its length.
	// It blocks until a request arrives; errors are as read(2) on /dev/cuse
	// (ENODEV once the connection is gone, EINVAL when iov is smaller than
	// the kernel's minimum, os.ErrClosed after Close).
	ReadRequest(iov [][]byte) (int, error)
	// WriteReply writes one whole message with writev. ENOENT means the
	// request it answers no longer exists (it was interrupted and ended).
	WriteReply(iov [][]byte) error
	// Close ends the connection; for CUSE the kernel then removes the node.
	Close() error
}

// fileChannel is a Channel over a file descriptor registered with Go's
// netpoller, so a goroutine waiting for a request parks instead of pinning
// an OS thread, and Close wakes it. /dev/cuse supports poll and O_NONBLOCK.
type fileChannel struct {
	f *os.File
}

// OpenDevCuse opens /dev/cuse (path, for a test, may name another
// character device speaking the protocol). Each open is one connection and
// therefore one device.
func OpenDevCuse(path string) (Channel, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("open %s: %w (is the cuse module loaded? modprobe cuse)", path, err)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return NewFileChannel(f), nil
}

// NewFileChannel wraps an open channel file. The file should be in
// non-blocking mode (os.OpenFile and os.NewFile of a non-blocking fd
// arrange that) so reads park in the netpoller.
func NewFileChannel(f *os.File) Channel { return &fileChannel{f: f} }

func (c *fileChannel) ReadRequest(iov [][]byte) (int, error) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Readv(int(fd), iov)
			if rerr != unix.EINTR {
				break
			}
		}
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

func (c *fileChannel) WriteReply(iov [][]byte) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for {
			_, werr = unix.Writev(int(fd), iov)
			if werr != unix.EINTR {
				break
			}
		}
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return werr
}

func (c *fileChannel) Close() error { return c.f.Close() }
