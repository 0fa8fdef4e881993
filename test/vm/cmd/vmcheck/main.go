// Command vmcheck holds the checks of the VM suite that busybox cannot do:
//
//	vmcheck goread PATH BYTES   read PATH with os.OpenFile (which makes the fd
//	                            non-blocking and epoll-registered) until EOF and
//	                            check that BYTES arrived
//	vmcheck signal PATH SIG     start `cat PATH`, wait until its read is parked
//	                            in the server, send SIG (INT or KILL) and check
//	                            that it dies of it (a hang fails after 30 s)
//	vmcheck time CMD            run `sh -c CMD` and print "elapsed SECONDS"
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
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: vmcheck goread PATH BYTES | signal PATH INT|KILL | time CMD")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "goread":
		err = goread(os.Args[2], os.Args[3])
	case "signal":
		err = signalReader(os.Args[2], os.Args[3])
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
