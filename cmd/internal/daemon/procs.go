package daemon

import (
	"os"
	"runtime"
)

// MinProcs is the fewest Ps (GOMAXPROCS) a process runs with while it
// serves the FUSE fallback's devices, or uses them (tbstream bench).
//
// The fallback's device server (cuse.Dir) and go-fuse (configfs, the
// sysfs view) wait for requests in blocking read(2)s of /dev/fuse, and
// blocking reads and writes of the fallback's files wait in the kernel. The Go runtime leaves a P with a goroutine
// blocked in a system call until sysmon takes it back, and sysmon does
// that only when no P is idle. With as many Ps as a small machine has
// cores these waits hold all of them, so sysmon ticks every 20 µs to
// retake them and a goroutine woken by a request waits for one. On the
// 2-core development machine, 8 Ps took a 4 KiB round trip through both
// daemons (tbstream bench -lat) from 29–35 context switches to 22–25 and
// its p50 down by a third; 4 was in between, 16 no better than 8.
//
// CUSE devices need none of this: package cuse reads /dev/cuse through
// the poller, and clients' reads of a character device use it too, so a
// daemon with CUSE devices keeps Go's default.
const MinProcs = 8

// RaiseProcs sets GOMAXPROCS to MinProcs if it is lower and the
// GOMAXPROCS environment variable does not set it, and says whether it
// did. Call it before go-fuse servers start: each sizes its pool of
// readers from GOMAXPROCS.
func RaiseProcs() bool {
	if os.Getenv("GOMAXPROCS") != "" || runtime.GOMAXPROCS(0) >= MinProcs {
		return false
	}
	runtime.GOMAXPROCS(MinProcs)
	return true
}
