package stream

import (
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
)

// TestUnsent: the bytes of the frames the TX ring did not complete, from
// the log of batches Write posted (a batch's frames are full but the
// last; frames complete in order; the log keeps the last ring_size
// batches).
func TestUnsent(t *testing.T) {
	const slot = nhi.SlotSize
	batches := []int{100, 3*slot + 7, slot, 2 * slot} // frames 1, 4, 1, 2: ends 1, 5, 6, 8
	for _, tc := range []struct {
		name      string
		size      int // ring size: how many batches the log keeps
		completed uint64
		want      uint64
	}{
		{"none sent", 8, 0, 100 + 3*slot + 7 + slot + 2*slot},
		{"first batch sent", 8, 1, 3*slot + 7 + slot + 2*slot},
		{"inside a batch", 8, 3, slot + 7 + slot + 2*slot},
		{"all but the short tail frame", 8, 4, 7 + slot + 2*slot},
		{"all sent", 8, 8, 0},
		{"the CLOSE frame too", 8, 9, 0},
		{"old batches forgotten", 2, 6, 2 * slot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &rings{txLog: make([]txBatch, tc.size)}
			for _, n := range batches {
				d.logTx((n+slot-1)/slot, n)
			}
			require.Equal(t, tc.want, d.unsent(tc.completed))
		})
	}
}
