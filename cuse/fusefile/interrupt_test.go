package fusefile_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/fusefile"
)

// The signal tests run a child process (this test binary again, see
// TestMain) that catches SIGUSR1 and blocks in a raw open(2), read(2) or
// write(2) on a mounted file whose device blocks until its request's
// context ends. The parent sends the signal once the device holds the
// request; the child reports what its syscall returned.
//
// The child is a Go program, so its handler is installed with SA_RESTART;
// that does not matter here: a FUSE request answered EINTR makes the
// syscall fail with EINTR, which the kernel never restarts (only
// -ERESTART* codes are). What matters is that the kernel sent
// FUSE_INTERRUPT and the server answered the blocked request. Async
// preemption is turned off in the child (GODEBUG=asyncpreemptoff=1) so no
// SIGURG of the Go runtime interrupts the request first: the only signal
// is the parent's.

// envSignalChild names the operation the child performs, and envPath the
// file.
const (
	envSignalChild = "FUSEFILE_TEST_SIGNAL_CHILD"
	envPath        = "FUSEFILE_TEST_PATH"
)

func TestMain(m *testing.M) {
	if op := os.Getenv(envSignalChild); op != "" {
		os.Exit(signalChild(op, os.Getenv(envPath)))
	}
	os.Exit(m.Run())
}

// signalChild is the child's main: it reports "ready", blocks in op, then
// prints the syscall's errno ("errno=4" for EINTR, "errno=0" on success)
// and whether SIGUSR1 had been caught by then.
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
		fd, err = syscall.Open(path, syscall.O_RDWR, 0)
		if err == nil {
			syscall.Close(fd)
		}
	case "read", "write":
		fd, oerr := syscall.Open(path, syscall.O_RDWR, 0)
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
	default:
		fmt.Println("unknown op", op)
		return 2
	}
	var errno syscall.Errno
	errors.As(err, &errno)
	select {
	case <-caught:
		fmt.Printf("errno=%d caught=true\n", errno)
	case <-time.After(10 * time.Second):
		fmt.Printf("errno=%d caught=false\n", errno)
	}
	return 0
}

// stuckDevice blocks every Open (when blockOpen), Read and Write until the
// request's context ends, and says on held when a request is blocked.
// Closing stop ends the wait too (with EIO), so that a test which failed
// because an interrupt was not honoured does not leave its child stuck in
// a syscall on the mount.
type stuckDevice struct {
	blockOpen bool
	held      chan string // the op now blocked
	stop      chan struct{}
}

func (d *stuckDevice) block(ctx context.Context, op string) error {
	d.held <- op
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stop:
		return syscall.EIO
	}
}

func (d *stuckDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	if d.blockOpen {
		return nil, d.block(ctx, "open")
	}
	return stuckHandle{d}, nil
}

type stuckHandle struct{ d *stuckDevice }

func (h stuckHandle) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	return cuse.ReadResult{}, h.d.block(ctx, "read")
}

func (h stuckHandle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	return 0, h.d.block(ctx, "write")
}

func (h stuckHandle) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	return 0, nil
}

func (h stuckHandle) Release(ctx context.Context) {}

// TestFallbackSignalInterrupts: open(2), read(2) and write(2) blocked in
// the device fail with EINTR when the caller catches a signal, so its
// handler runs (the field report: a sender blocked in write(2) never got
// to its SIGINT handler).
func TestFallbackSignalInterrupts(t *testing.T) {
	for _, op := range []string{"open", "read", "write"} {
		t.Run(op, func(t *testing.T) {
			dev := &stuckDevice{blockOpen: op == "open", held: make(chan string, 1), stop: make(chan struct{})}
			dir := mount(t, map[string]fusefile.File{"tbstream0": {Device: dev}})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envSignalChild+"="+op, envPath+"="+filepath.Join(dir, "tbstream0"), "GODEBUG=asyncpreemptoff=1")
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			t.Cleanup(func() { close(dev.stop) }) // first: the child's syscall returns
			lines := make(chan string, 2)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			var tid int
			_, err = fmt.Sscanf(recv(t, lines, "the child's start"), "ready %d", &tid)
			require.NoError(t, err)
			select {
			case got := <-dev.held:
				require.Equal(t, op, got)
			case <-time.After(hangGuard):
				t.Fatalf("the child's %s never reached the device", op)
			}
			require.NoError(t, syscall.Tgkill(cmd.Process.Pid, tid, syscall.SIGUSR1))
			res := recv(t, lines, "the child's "+op+" to return after the signal")
			require.Equal(t, fmt.Sprintf("errno=%d caught=true", syscall.EINTR), res,
				"the blocked %s fails with EINTR and the handler runs", op)
			require.NoError(t, cmd.Wait())
		})
	}
}

// hangGuard only catches hangs; nothing is asserted about speed.
const hangGuard = 30 * time.Second

func recv(t *testing.T, lines <-chan string, what string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		require.True(t, ok, "the child exited while waiting for %s", what)
		return strings.TrimSpace(l)
	case <-time.After(hangGuard):
		t.Fatalf("still waiting for %s after %v", what, hangGuard)
		return ""
	}
}
