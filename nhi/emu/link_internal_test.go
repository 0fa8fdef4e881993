package emu

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// A frame written after a withdrawal goes out after it: the path (or ring)
// went down first, and the peer must learn of it before the frame, as on a
// link. The stream service counts on it: its answer to a peer's CLOSE
// follows the withdrawal of its RX path's credits, so the peer sends
// nothing of its next session into the ended one.
func TestCableWithdrawalBeforeLaterFrames(t *testing.T) {
	var buf bytes.Buffer
	e := &streamEnd{w: bufio.NewWriter(&buf)}
	e.sendCredit(8, 3)
	e.sendCreditReset(9)
	e.sendData(12, 1, 3, bytes.Repeat([]byte{0}, 256))
	e.sendCredit(10, 1) // after the frame: waits for the flush
	e.flush()

	r := bufio.NewReaderSize(&buf, 64<<10)
	var kinds []CableKind
	var hops []uint16
	for r.Buffered() > 0 || buf.Len() > 0 {
		f, err := readCableFrame(r)
		require.NoError(t, err)
		kinds = append(kinds, f.Kind)
		hops = append(hops, f.HopID)
	}
	require.Equal(t, []CableKind{CableCredit, CableCreditReset, CableData, CableCredit}, kinds)
	require.Equal(t, []uint16{8, 9, 12, 10}, hops)
}
