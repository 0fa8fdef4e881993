package cuse_test

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// TestMain fails the package when its tests leave file descriptors open
// (socketpairs of the fake kernel, channels a server failed to close).
func TestMain(m *testing.M) {
	before := openFDs()
	code := m.Run()
	if code == 0 {
		// Closing is synchronous, but give finalizer-closed files a moment.
		for range 100 {
			if openFDs() <= before {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if after := openFDs(); after > before {
			fmt.Fprintf(os.Stderr, "leaked %d file descriptors (%d before, %d after)\n", after-before, before, after)
			code = 1
		}
	}
	os.Exit(code)
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}
