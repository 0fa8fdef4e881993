package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A daemon runs until `tbstream down`, so whatever descriptor it inherits
// stays open that long: a script that starts `tbstream up` while it holds
// a flock(1) on a descriptor has its lock held by the daemons, and a pipe
// its caller waits on for EOF never ends. A daemon keeps only stdin,
// stdout and stderr (/dev/null and its log when `tbstream up` starts it)
// and what it opens itself.
//
// Which descriptors were inherited is told by their close-on-exec flag:
// execve(2) closed every descriptor of the starter that had it, and kept
// those without; Go opens every descriptor of its own (the runtime's
// epoll and eventfd, os.Open, net, pipes) with O_CLOEXEC. So in a Go
// program a descriptor above 2 without the flag is one it inherited,
// however early the runtime or a package's init opened its own, which
// closing every descriptor above 2 (close_range) would take away.

// CloseInherited closes every descriptor above 2 that this process
// inherited from its starter and returns them, each as "FD (what it
// was)", for the log. Call it first thing in a daemon's main.
func CloseInherited() ([]string, error) {
	fds, err := openFDs()
	if err != nil {
		return nil, fmt.Errorf("close inherited descriptors: %w", err)
	}
	var closed []string
	for _, fd := range fds {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // gone (openFDs' own), or ours
		}
		what, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		if err := unix.Close(fd); err != nil {
			return closed, fmt.Errorf("close inherited descriptor %d (%s): %w", fd, what, err)
		}
		closed = append(closed, fmt.Sprintf("%d (%s)", fd, what))
	}
	return closed, nil
}

// CloseOnExecAll marks every descriptor above 2 close-on-exec, so that a
// daemon started next (os/exec passes on every descriptor without the
// flag, not only its ExtraFiles) inherits none of what this process
// inherited: `tbstream up` started from a script that holds a lock.
func CloseOnExecAll() error {
	fds, err := openFDs()
	if err != nil {
		return fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	return nil
}

// LogInherited logs what CloseInherited did, once the daemon has a log:
// a failure as a warning, the descriptors closed as a debug message (a
// daemon started from a shell or a harness inherits some routinely, and
// a daemon that cannot start must say why in one line).
func LogInherited(log *slog.Logger, closed []string, err error) {
	if err != nil {
		log.Warn("inherited descriptors may stay open", "err", err)
	}
	if len(closed) > 0 {
		log.Debug("closed descriptors inherited from the starting process", "fds", strings.Join(closed, ", "))
	}
}

// openFDs lists this process's open descriptors above 2, from
// /proc/self/fd (the listing's own descriptor is closed again by the time
// it returns).
func openFDs() ([]int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			fds = append(fds, fd)
		}
	}
	return fds, nil
}
