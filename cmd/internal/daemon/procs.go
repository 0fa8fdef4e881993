package daemon

import (
	"os"
	"runtime"
)

// MinProcs is the fewest Ps (GOMAXPROCS) a tbstream process runs with.
//
// A daemon's go-fuse servers (configfs, the fallback devices) wait for
// requests in blocking read(2)s of /dev/fuse, its shared-memory cable
// sleeps on a futex, and tbstream bench blocks in the devices' reads and
// writes. The Go runtime leaves a P with a goroutine blocked in a system
// call until sysmon takes it back, and sysmon does that only when no P is
// idle. With as many Ps as a small machine has cores these waits hold all
// of them, so sysmon ticks every 20 µs to retake them and a goroutine
// woken by a request waits for one. On the 2-core development machine, 8
// Ps took a 4 KiB round trip through both daemons (tbstream bench -lat)
// from 34–35 context switches to 23–25, and its p50 down by a third; 4
// was in between, 16 no better than 8.
const MinProcs = 8

// RaiseProcs sets GOMAXPROCS to MinProcs if it is lower and the
// GOMAXPROCS environment variable does not set it.
func RaiseProcs() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < MinProcs {
		runtime.GOMAXPROCS(MinProcs)
	}
}
