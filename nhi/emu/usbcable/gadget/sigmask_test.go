package gadget

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// The mask is the calling thread's only: /proc/thread-self/status shows
// it set on the thread that asked and not on others.
func TestBlockAsyncSignals(t *testing.T) {
	blocked := func() uint64 {
		b, err := os.ReadFile("/proc/thread-self/status")
		require.NoError(t, err)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "SigBlk:"); ok {
				n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				require.NoError(t, err)
				return n
			}
		}
		t.Fatal("no SigBlk in /proc/thread-self/status")
		return 0
	}
	done := make(chan uint64)
	go func() {
		runtime.LockOSThread() // the thread ends with the goroutine
		require.NoError(t, blockAsyncSignals())
		done <- blocked()
	}()
	got := <-done
	for _, sig := range []syscall.Signal{syscall.SIGURG, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGPROF} {
		require.NotZero(t, got&(1<<(uint(sig)-1)), "signal %v blocked", sig)
	}
	for _, sig := range []syscall.Signal{syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE} {
		require.Zero(t, got&(1<<(uint(sig)-1)), "signal %v left alone", sig)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	require.Zero(t, blocked()&(1<<(uint(syscall.SIGURG)-1)), "this thread's mask is unchanged")
}
