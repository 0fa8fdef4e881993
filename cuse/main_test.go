package cuse_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package when its tests leave file descriptors open
// (socketpairs of the fake kernel, channels a server failed to close) or
// server goroutines running (readers, handlers, the fake kernel's reader).
func TestMain(m *testing.M) {
	if op := os.Getenv(envDirChild); op != "" {
		os.Exit(dirChild(op, os.Getenv(envDirPath)))
	}
	// The runtime's netpoller makes its descriptors (an epoll instance
	// and an eventfd) at the first pollable file and keeps them: make
	// them now, so they are not counted as leaked.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := openFDs()
	code := m.Run()
	if code == 0 {
		// Goroutines finish just after Close returns; give them a moment.
		for range 100 {
			if openFDs() <= before && leakedGoroutines() == "" {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if after := openFDs(); after > before {
			fmt.Fprintf(os.Stderr, "leaked %d file descriptors (%d before, %d after)\n", after-before, before, after)
			code = 1
		}
		if g := leakedGoroutines(); g != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", g)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines still running code of
// the cuse packages.
func leakedGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "tbstream/cuse") && !strings.Contains(g, "cuse_test.TestMain") {
			leaked = append(leaked, g)
		}
	}
	return strings.Join(leaked, "\n\n")
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}
