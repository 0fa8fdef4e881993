package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// fdReport is what the child of the fd tests says (TestMain,
// TBSTREAM_TEST_FDS).
type fdReport struct {
	Closed []string       // CloseInherited's answer
	Err    string         // and its error
	Open   map[int]string // /proc/self/fd afterwards: descriptor → target
	// PipeOK: a pipe made before CloseInherited (with it the runtime's
	// poller: epoll and eventfd descriptors) still works after.
	PipeOK bool
}

// reportFDs is the child: with mode "close" it calls CloseInherited,
// first thing as a daemon does (after the pipe that makes the runtime
// open descriptors of its own), reports, and waits for stdin's EOF, so
// that its parent can look at what it holds meanwhile; with "list" it
// only reports its open descriptors.
func reportFDs(mode string) int {
	var rep fdReport
	var r, w *os.File
	if mode == "close" {
		var err error
		if r, w, err = os.Pipe(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		closed, err := CloseInherited()
		rep.Closed = closed
		if err != nil {
			rep.Err = err.Error()
		}
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		w.Write([]byte("x"))
		b := make([]byte, 1)
		n, err := r.Read(b)
		rep.PipeOK = n == 1 && err == nil
	}
	rep.Open = map[int]string{}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, e := range fds {
		fd, _ := strconv.Atoi(e.Name())
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			rep.Open[fd] = target
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return 1
	}
	if mode == "close" {
		io.Copy(io.Discard, os.Stdin)
	}
	return 0
}

// startFDChild runs the child in mode, with extra as its descriptors 3...,
// and returns its report and a function that ends it.
func startFDChild(t *testing.T, mode string, extra ...*os.File) (fdReport, func()) {
	t.Helper()
	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), "TBSTREAM_TEST_FDS="+mode)
	c.ExtraFiles = extra
	stdin, err := c.StdinPipe()
	require.NoError(t, err)
	stdout, err := c.StdoutPipe()
	require.NoError(t, err)
	c.Stderr = os.Stderr
	require.NoError(t, c.Start())
	end := func() {
		stdin.Close()
		c.Wait()
	}
	var rep fdReport
	if err := json.NewDecoder(stdout).Decode(&rep); err != nil {
		end()
		t.Fatalf("child's report: %v", err)
	}
	return rep, end
}

// A daemon started from a script that holds a flock on a descriptor (as
// flock(1) does, for its command) closes it at start: the script's lock
// is free as soon as the script lets it go, while the daemon runs on. The
// descriptors of the daemon's own runtime stay.
func TestCloseInherited(t *testing.T) {
	held := filepath.Join(t.TempDir(), "script.lock")
	f, err := os.OpenFile(held, os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, unix.Flock(int(f.Fd()), unix.LOCK_EX))
	devnull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devnull.Close()

	rep, end := startFDChild(t, "close", f, devnull)
	defer end()
	require.Empty(t, rep.Err)
	// And whatever else this test inherited itself.
	assert.Subset(t, rep.Closed, []string{"3 (" + held + ")", "4 (/dev/null)"})
	assert.True(t, rep.PipeOK, "the runtime's poller survived")
	for fd, target := range rep.Open {
		assert.NotEqual(t, held, target, "descriptor %d", fd)
		if fd == 3 || fd == 4 {
			assert.NotEqual(t, os.DevNull, target, "descriptor %d", fd)
		}
	}
	assert.Greater(t, len(rep.Open), 3, "the runtime's own descriptors (pipe, epoll) are not closed: %v", rep.Open)

	require.NoError(t, f.Close())
	g, err := os.Open(held)
	require.NoError(t, err)
	defer g.Close()
	require.NoError(t, unix.Flock(int(g.Fd()), unix.LOCK_EX|unix.LOCK_NB), "the child still holds the lock its starter let go")
}

// CloseOnExecAll keeps what this process inherited (a descriptor without
// close-on-exec) from the processes it starts next, ExtraFiles aside.
func TestCloseOnExecAll(t *testing.T) {
	held := filepath.Join(t.TempDir(), "script.lock")
	require.NoError(t, os.WriteFile(held, nil, 0o600))
	// Opened as a descriptor inherited from a shell is: no O_CLOEXEC.
	fd, err := unix.Open(held, unix.O_RDONLY, 0)
	require.NoError(t, err)
	defer unix.Close(fd)

	rep, end := startFDChild(t, "list")
	end()
	require.Equal(t, held, rep.Open[fd], "without close-on-exec, exec passes it on: %v", rep.Open)

	require.NoError(t, CloseOnExecAll())
	devnull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devnull.Close()
	rep, end = startFDChild(t, "list", devnull)
	end()
	assert.NotContains(t, slices.Collect(maps.Values(rep.Open)), held)
	assert.Equal(t, os.DevNull, rep.Open[3], "ExtraFiles are passed on still")
}
