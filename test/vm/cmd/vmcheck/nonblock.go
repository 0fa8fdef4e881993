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
	fd, err := unix.Open(path, flags, 0)
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
	if _, err := unix.Read(fd, make([]byte, 1)); err != nil {
		return err.Error()
	}
	return "ok"
}
