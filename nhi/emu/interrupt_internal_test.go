package emu

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func delivered(v *msix) bool {
	select {
	case <-v.c:
		return true
	default:
		return false
	}
}

// TestThrottledDeliveryOnNextCompletion: within the throttling interval
// an interrupt is held, and the first completion after the interval has
// passed delivers it on the completing goroutine, with no timer.
func TestThrottledDeliveryOnNextCompletion(t *testing.T) {
	v := &msix{c: make(chan struct{}, 1)}
	v.interval.Store(int64(time.Hour)) // no timer runs during the test

	v.fire()
	require.True(t, delivered(v), "the first interrupt goes out at once")
	v.fire()
	v.fire()
	require.False(t, delivered(v), "held within the interval")
	require.True(t, v.pending)

	// A run of the timer before the interval has passed (one Stop came
	// too late for) must not deliver early.
	v.deferred()
	require.False(t, delivered(v), "a stale timer run delivered within the interval")
	require.True(t, v.pending, "a stale timer run dropped the held interrupt")

	v.mu.Lock()
	v.last = v.last.Add(-time.Hour) // the interval has passed
	v.mu.Unlock()
	v.fire()
	require.True(t, delivered(v), "the completion after the interval delivers the held interrupt")
	require.False(t, v.pending)
	v.deferred()
	require.False(t, delivered(v), "the timer delivered a second time")
}

// TestThrottledDeliveryByTimer: the interrupt held at the end of a burst
// is delivered by the timer, no sooner than the interval after the last.
func TestThrottledDeliveryByTimer(t *testing.T) {
	const interval = 2 * time.Millisecond
	v := &msix{c: make(chan struct{}, 1)}
	v.interval.Store(int64(interval))

	for range 3 {
		start := time.Now()
		v.fire()
		v.fire() // held
		require.True(t, delivered(v), "the first interrupt goes out at once")
		select {
		case <-v.c:
			require.GreaterOrEqual(t, time.Since(start), interval, "delivered within the interval")
		case <-time.After(10 * time.Second):
			t.Fatal("the held interrupt was never delivered")
		}
		time.Sleep(interval) // the next round's first interrupt is not held
	}
}
