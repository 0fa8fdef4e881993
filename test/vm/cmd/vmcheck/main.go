// Command vmcheck holds the checks of the VM suite that busybox cannot do:
//
//	vmcheck goread PATH BYTES   read PATH with os.OpenFile (which makes the fd
//	                            non-blocking and epoll-registered) until EOF and
//	                            check that BYTES arrived
//	vmcheck signal PATH SIG     start `cat PATH`, wait until its read is parked
//	                            in the server, send SIG (INT or KILL) and check
//	                            that it dies of it (a hang fails after 30 s)
//	vmcheck poll PATH           poll(2) and O_NONBLOCK on a loopback device:
//	                            EAGAIN when empty, POLLIN after a write
//	                            (NOTIFY_POLL), POLLHUP and EOF after the writer
//	                            closes
//	vmcheck time CMD            run `sh -c CMD` and print "elapsed SECONDS"
//	vmcheck nbopen PATH         open PATH with O_NONBLOCK, print the errno (or "ok")
//	vmcheck nbread PATH         open PATH, read 1 byte with O_NONBLOCK, print the errno
//	vmcheck procs               every user process: state, and per thread wchan and
//	                            kernel stack (what a stuck step's processes wait on)
//	vmcheck killtree PID        SIGCONT, then SIGKILL, PID and all its descendants
//	vmcheck nodac CMD [ARGS...] exec CMD without CAP_DAC_OVERRIDE and
//	                            CAP_DAC_READ_SEARCH (root bound by file modes)
//
// Exit status 0 means the check passed; the reason for a failure is printed.
package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "procs" {
		procs(os.Stdout)
		return
	}
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: vmcheck goread PATH BYTES | signal PATH INT|KILL | poll PATH | time CMD | procs | killtree PID | nodac CMD [ARGS...]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "nodac":
		err = noDAC(os.Args[2:]) // returns only on failure
	case "killtree":
		var pid int
		if pid, err = strconv.Atoi(os.Args[2]); err == nil {
			fmt.Printf("killed %d processes\n", killTree(pid))
		}
	case "goread":
		err = goread(os.Args[2], os.Args[3])
	case "signal":
		err = signalReader(os.Args[2], os.Args[3])
	case "poll":
		err = pollCheck(os.Args[2])
	case "nbopen", "nbread":
		fmt.Println(nonblocking(os.Args[1], os.Args[2]))
	case "time":
		start := time.Now()
		cmd := exec.Command("sh", "-c", os.Args[2])
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err = cmd.Run()
		fmt.Printf("elapsed %.6f\n", time.Since(start).Seconds())
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("vmcheck:", err)
		os.Exit(1)
	}
}

func goread(path, want string) error {
	n, err := strconv.ParseInt(want, 10, 64)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := io.Copy(io.Discard, f)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if got != n {
		return fmt.Errorf("read %d bytes from %s, want %d", got, path, n)
	}
	fmt.Printf("read %d bytes through os.File\n", got)
	return nil
}

// signalReader checks that a reader blocked in read(2) on a CUSE device dies
// promptly of sig: the kernel sends INTERRUPT and the server must answer.
func signalReader(path, sigName string) error {
	sig := map[string]syscall.Signal{"INT": syscall.SIGINT, "KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM}[sigName]
	if sig == 0 {
		return fmt.Errorf("unknown signal %q", sigName)
	}
	waiting := filepath.Join("/sys/class/cuse", filepath.Base(path), "waiting")
	cmd := exec.Command("cat", path)
	if err := cmd.Start(); err != nil {
		return err
	}
	// The read is parked once the connection has a request outstanding.
	parked := false
	for range 3000 {
		b, _ := os.ReadFile(waiting)
		if v, _ := strconv.Atoi(strings.TrimSpace(string(b))); v > 0 {
			parked = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !parked {
		cmd.Process.Kill()
		return fmt.Errorf("no request outstanding on %s", waiting)
	}
	start := time.Now()
	cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("reader still alive 30 s after SIG%s: hang", sigName)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != sig {
		return fmt.Errorf("reader ended with %v, want death by SIG%s", cmd.ProcessState, sigName)
	}
	fmt.Printf("reader died of SIG%s after %.3f s\n", sigName, time.Since(start).Seconds())
	return nil
}

// pollCheck drives poll(2) by hand (no Go netpoller): the server must
// answer POLL with the current readiness and send NOTIFY_POLL when it
// changes, or the second poll never returns.
func pollCheck(path string) error {
	rfd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(rfd)
	wfd, err := syscall.Open(path, syscall.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, 16)
	if _, err := retry(func() (int, error) { return syscall.Read(rfd, buf) }); err != syscall.EAGAIN {
		return fmt.Errorf("read of an empty device: %v, want EAGAIN", err)
	}
	fds := []unix.PollFd{{Fd: int32(rfd), Events: unix.POLLIN}}
	// Even a zero timeout can end in EINTR: poll(2) checks for a pending
	// signal before it looks at the timeout, and the CUSE round trip for
	// POLL leaves room for one of Go's signals.
	if n, err := pollRetry(fds, 0); err != nil || n != 0 {
		return fmt.Errorf("poll of an empty device: n=%d revents=%#x err=%v, want not ready", n, fds[0].Revents, err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		syscall.Write(wfd, []byte("x"))
	}()
	start := time.Now()
	n, err := pollRetry(fds, 30000)
	if err != nil || n != 1 || fds[0].Revents&unix.POLLIN == 0 {
		return fmt.Errorf("poll waiting for a write: n=%d revents=%#x err=%v (no NOTIFY_POLL?)", n, fds[0].Revents, err)
	}
	woke := time.Since(start)
	if k, err := syscall.Read(rfd, buf); err != nil || string(buf[:k]) != "x" {
		return fmt.Errorf("read after POLLIN: %q, %v", buf[:k], err)
	}
	syscall.Close(wfd)
	n, err = pollRetry(fds, 30000)
	if err != nil || n != 1 || fds[0].Revents&unix.POLLHUP == 0 {
		return fmt.Errorf("poll after the writer closed: n=%d revents=%#x err=%v, want POLLHUP", n, fds[0].Revents, err)
	}
	if k, err := syscall.Read(rfd, buf); err != nil || k != 0 {
		return fmt.Errorf("read after hang-up: %d bytes, %v, want EOF", k, err)
	}
	fmt.Printf("EAGAIN, not ready, POLLIN %.3f s after poll(2) began (write at 0.2 s), POLLHUP, EOF\n", woke.Seconds())
	return nil
}

func pollRetry(fds []unix.PollFd, ms int) (int, error) {
	return retry(func() (int, error) { return unix.Poll(fds, ms) })
}
