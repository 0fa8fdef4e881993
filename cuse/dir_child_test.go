package cuse_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
)

// Some tests of the dir_*_test.go files need a client in another process:
// to be interrupted by a signal, or to use *os.File (see dir_test.go). The
// child is this test binary again: TestMain runs dirChild instead of the
// tests when envDirChild names an operation.
const (
	envDirChild = "CUSE_TEST_DIR_CHILD" // the operation
	envDirPath  = "CUSE_TEST_DIR_PATH"  // the file it works on
)

// goClientBytes is what the "goclient" child sends through the file.
const goClientBytes = 3<<20 + 123

// dirChild is the child's main. Its output is one line per step:
//
//   - "goclient": reads the file with an *os.File while another *os.File
//     writes goClientBytes into it, then prints "ok N" (N bytes read,
//     equal to those written) or what went wrong;
//   - "open", "read", "write": prints "ready TID", blocks in a raw
//     open(2), read(2) of 4 KiB or write(2) of 4 KiB of the file, then
//     prints "errno=E caught=C": the syscall's errno (0 for success) and
//     whether SIGUSR1 had been caught by then (the parent sends it to
//     thread TID).
func dirChild(op, path string) int {
	switch op {
	case "goclient":
		fmt.Println(goClient(path))
		return 0
	case "open", "read", "write":
		return signalChild(op, path)
	}
	fmt.Println("unknown op", op)
	return 2
}

func goClientData() []byte {
	b := make([]byte, goClientBytes)
	rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

func goClient(path string) string {
	want := goClientData()
	r, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err.Error()
	}
	defer r.Close()
	errc := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			errc <- err
			return
		}
		_, err = w.Write(want)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		errc <- err
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		return "read: " + err.Error()
	}
	if err := <-errc; err != nil {
		return "write: " + err.Error()
	}
	if !bytes.Equal(want, got) {
		return fmt.Sprintf("read %d bytes that differ from the %d written", len(got), len(want))
	}
	return fmt.Sprintf("ok %d", len(got))
}

// signalChild: see dirChild. The child is a Go program, so its handler
// is installed with SA_RESTART; that does not matter: a FUSE request
// answered EINTR makes the syscall fail with EINTR, which the kernel never
// restarts. The parent turns off async preemption in the child
// (GODEBUG=asyncpreemptoff=1) so that no SIGURG of the Go runtime
// interrupts the request first: the only signal is the parent's.
func signalChild(op, path string) int {
	// The syscall and the signal share this thread: the parent directs
	// the signal at it with tgkill(2).
	runtime.LockOSThread()
	caught := make(chan os.Signal, 1)
	signal.Notify(caught, syscall.SIGUSR1)
	ready := fmt.Sprintf("ready %d", syscall.Gettid())
	var err error
	switch op {
	case "open":
		fmt.Println(ready)
		var fd int
		fd, err = syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
		if err == nil {
			syscall.Close(fd)
		}
	case "read", "write":
		fd, oerr := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
		if oerr != nil {
			fmt.Println("open:", oerr)
			return 2
		}
		fmt.Println(ready)
		if op == "read" {
			_, err = syscall.Read(fd, make([]byte, 4096))
		} else {
			_, err = syscall.Write(fd, make([]byte, 4096))
		}
		syscall.Close(fd)
	}
	var errno syscall.Errno
	errors.As(err, &errno)
	select {
	case <-caught:
		fmt.Printf("errno=%d caught=true\n", errno)
	case <-time.After(dirGuard):
		fmt.Printf("errno=%d caught=false\n", errno)
	}
	return 0
}

// child is a running dirChild.
type child struct {
	cmd    *exec.Cmd
	lines  chan string
	exited chan struct{} // closed once cmd.Wait has returned
}

// startChild runs dirChild(op, path). At the end of the test the child is
// killed; should it not die (stuck in a request the server never
// answers), the mount is taken down, which fails the request.
func startChild(t *testing.T, d *cuse.Dir, op, path string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envDirChild+"="+op, envDirPath+"="+path, "GODEBUG=asyncpreemptoff=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, lines: make(chan string, 16), exited: make(chan struct{})}
	exited := c.exited
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- strings.TrimSpace(sc.Text())
		}
		close(c.lines)
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
			return
		case <-time.After(dirGuard):
		}
		t.Errorf("child %s still alive %v after SIGKILL: taking the mount down", op, dirGuard)
		d.Unmount()
		<-exited
	})
	return c
}

// line returns the child's next output line.
func (c *child) line(t *testing.T, what string) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		require.True(t, ok, "the child exited while the test waited for %s", what)
		return l
	case <-time.After(dirGuard):
		t.Fatalf("still waiting for %s after %v", what, dirGuard)
		return ""
	}
}

// wait waits for the child to exit and returns how it ended.
func (c *child) wait(t *testing.T) *os.ProcessState {
	t.Helper()
	go func() {
		for range c.lines { // drain, so the reader can reach cmd.Wait
		}
	}()
	select {
	case <-c.exited:
		return c.cmd.ProcessState
	case <-time.After(dirGuard):
		t.Fatalf("the child still runs after %v", dirGuard)
		return nil
	}
}

// waitOK waits for the child and requires a clean exit.
func (c *child) waitOK(t *testing.T) {
	t.Helper()
	st := c.wait(t)
	require.True(t, st.Success(), "child: %v", st)
}
