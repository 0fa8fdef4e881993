package emu_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
)

// TestConcurrentConfigReads reads the type of every adapter from several
// goroutines at once. A reply names the responder's upstream adapter, not
// the one asked about, so requests that differ only in the adapter must
// not be in flight together or they take each other's replies.
func TestConcurrentConfigReads(t *testing.T) {
	h := newTestHost(t, "host")
	want := map[uint8]uint32{1: nhi.AdapterLane, 2: nhi.AdapterLane, 3: nhi.AdapterLane, 4: nhi.AdapterLane, 5: nhi.AdapterNHI}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				adapter := uint8(1 + (g+i)%5)
				w, err := h.ctl.ReadConfig(context.Background(), 0, ctl.SpaceAdapter, adapter, nhi.AdpCS2, 1)
				require.NoError(t, err)
				require.Equal(t, want[adapter], w[0]&nhi.AdpCS2TypeMask, "adapter %d", adapter)
			}
		}()
	}
	wg.Wait()
}
