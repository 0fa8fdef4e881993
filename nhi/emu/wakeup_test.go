package emu_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
)

// gatedVectors is a Device whose interrupts the test can hold back: while
// the gate is shut, the driver's interrupt goroutines get nothing (a
// vector that fired is delivered when the gate opens), so the only
// reapers of a ring are the calls the test makes.
type gatedVectors struct {
	nhi.Device
	mu      sync.Mutex
	shut    bool
	pending []bool
	out     []chan struct{}
}

func gate(d nhi.Device) *gatedVectors {
	g := &gatedVectors{Device: d}
	for i, in := range d.Vectors() {
		g.out = append(g.out, make(chan struct{}, 1))
		g.pending = append(g.pending, false)
		go func() {
			for range in {
				g.fire(i)
			}
		}()
	}
	return g
}

func (g *gatedVectors) Vectors() []<-chan struct{} {
	v := make([]<-chan struct{}, len(g.out))
	for i, c := range g.out {
		v[i] = c
	}
	return v
}

func (g *gatedVectors) fire(i int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		g.pending[i] = true
		return
	}
	select {
	case g.out[i] <- struct{}{}:
	default:
	}
}

func (g *gatedVectors) setShut(shut bool) {
	g.mu.Lock()
	g.shut = shut
	pending := g.pending
	g.pending = make([]bool, len(pending))
	g.mu.Unlock()
	for i, p := range pending {
		if p {
			g.fire(i)
		}
	}
}

// TestReapByLookingWakesWaiters: a writer waits for a TX slot; the frames
// in flight complete, and before any interrupt is handled another caller
// asks TxFree, which reaps them. The writer must be woken by that reap:
// the interrupt goroutine will find nothing left to reap and says nothing.
// (Seen as TestBackpressureNoLoss/tcp hanging once in a hundred runs,
// where the test's own TxFree polling took the completions.)
func TestReapByLookingWakesWaiters(t *testing.T) {
	const size = 4 // 3 frames in flight fill the ring
	var g *gatedVectors
	host1 := newTestHostOn(t, "host1", func(d nhi.Device) nhi.Device { g = gate(d); return g })
	f := newFabricOf(t, "inproc", host1, newTestHost(t, "host2"))
	s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: size})
	// host2 grants no credits until its RX path exists: host1's frames wait.
	s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: 64, noRxPath: true})

	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	frame := make([]byte, 100)
	for range size - 1 {
		_, err := s1.tx.Write(ctx, frame, pdfFrameStart, pdfData)
		require.NoError(t, err)
	}
	require.Zero(t, s1.tx.TxFree())
	wrote := make(chan error, 1)
	go func() {
		_, err := s1.tx.Write(ctx, frame, pdfFrameStart, pdfData)
		wrote <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the writer go to sleep in WaitTx

	// Interrupts held back, then credits: the three frames complete.
	g.setShut(true)
	writePath(t, f.host2, lane2, 8, nhiAdapter, s2.rx.Hop())
	require.Eventually(t, func() bool { return s2.rx.RxReady() == size-1 }, waitLong, time.Millisecond)
	require.Equal(t, size-1, s1.tx.TxFree(), "TxFree reaps the completions")
	select {
	case err := <-wrote:
		require.NoError(t, err)
	case <-ctx.Done():
		g.setShut(false)
		t.Fatal("the writer was not woken by the reap TxFree made")
	}
	g.setShut(false)
}

// TestFlushBelowHalfFull: a TX ring below half full asks for no completion
// interrupts (nobody needs to wait for space), so a Flush of its last
// frames must find their completion itself.
func TestFlushBelowHalfFull(t *testing.T) {
	f := newFabric(t, "inproc")
	s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: 64})
	// No RX path on host2 yet: no credits, host1's frames wait.
	s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: 64, noRxPath: true})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for i := range 3 {
		_, err := s1.tx.Write(ctx, pattern(make([]byte, 100), i), pdfFrameStart, pdfData)
		require.NoError(t, err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- s1.tx.Flush(ctx) }()
	writePath(t, f.host2, lane2, 8, nhiAdapter, s2.rx.Hop())
	require.NoError(t, <-flushed)
	require.Zero(t, 63-s1.tx.TxFree())
	for i := range 3 {
		_, data := readFrame(t, s2.rx, waitLong)
		require.Equal(t, pattern(make([]byte, 100), i), data)
	}
}

// TestInterruptsRunInline: on the emulated NHI the driver's interrupt
// handler runs on the goroutine that raises the interrupt (the cable's
// reader, the engine, a doorbell's writer), so a frame reaching an idle
// ring wakes its blocked reader with one hand-off: no vector goroutine
// exists, and a blocked reader is still woken. A device that is not an
// nhi.InlineDevice (the gate above) keeps the vector goroutines.
func TestInterruptsRunInline(t *testing.T) {
	vectorGoroutines := func() int {
		buf := make([]byte, 1<<20)
		// Probe starts nothing else; "created by" is there even for a
		// goroutine that has not run yet.
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "created by tbstream/nhi.Probe")
	}
	before := vectorGoroutines()
	f := newFabric(t, "inproc")
	require.Equal(t, before, vectorGoroutines(), "vector goroutines on an emulated NHI")
	newTestHostOn(t, "gated", func(d nhi.Device) nhi.Device { return gate(d) })
	require.Greater(t, vectorGoroutines(), before, "a device without inline handlers got no vector goroutine")

	s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: 32})
	s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: 32})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	woken := make(chan error, 1)
	go func() { woken <- s2.waitRx(ctx) }() // blocks on the RX ring's Notify
	time.Sleep(10 * time.Millisecond)
	_, err := s1.tx.Write(ctx, []byte("one frame"), pdfFrameStart, pdfData)
	require.NoError(t, err)
	require.NoError(t, <-woken)
}
