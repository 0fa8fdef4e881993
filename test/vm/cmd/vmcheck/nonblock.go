package main

import (
	"golang.org/x/sys/unix"
)

// nonblocking opens path with O_NONBLOCK (nbopen), or opens it blocking
// and reads one byte with O_NONBLOCK set (nbread), and returns the error's
// text as strerror spells it, or "ok".
func nonblocking(mode, path string) string {
	flags := unix.O_RDWR
	if mode == "nbopen" {
		flags |= unix.O_NONBLOCK
	}
	fd, err := retry(func() (int, error) { return unix.Open(path, flags, 0) })
	if err != nil {
		return err.Error()
	}
	defer unix.Close(fd)
	if mode == "nbopen" {
		return "ok"
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return err.Error()
	}
	if _, err := retry(func() (int, error) { return unix.Read(fd, make([]byte, 1)) }); err != nil {
		return err.Error()
	}
	return "ok"
}

// retry calls f again while it fails with EINTR, as a C program would: a
// request to the CUSE server waits interruptibly, and a signal (one of
// Go's own) may land while it does, even for a non-blocking open or read.
func retry(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}
