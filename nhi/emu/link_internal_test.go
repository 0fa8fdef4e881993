package emu

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"sync"
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

// Credits granted after a reset are never withdrawn by it, however the
// flushes that write them interleave: a ring stopped and started again
// (reset, then the new ring's credits) while another goroutine flushes
// must leave the peer with the new credits. Written the other way round,
// the peer would hold none while the RX ring thinks it granted them all,
// and that direction would stall for good.
func TestCableCreditsAfterResetSurvive(t *testing.T) {
	var buf bytes.Buffer
	e := &streamEnd{w: bufio.NewWriter(&buf)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					e.writeCredits()
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	var held int32 // the peer's credits for HopID 8, replayed
	for round := range 5000 {
		e.sendCreditReset(8)
		e.sendCredit(8, 2)
		e.writeCredits()
		e.wmu.Lock()
		require.NoError(t, e.w.Flush())
		r := bufio.NewReaderSize(bytes.NewReader(bytes.Clone(buf.Bytes())), 64<<10)
		buf.Reset()
		e.wmu.Unlock()
		for {
			if _, err := r.Peek(1); err != nil {
				break
			}
			f, err := readCableFrame(r)
			require.NoError(t, err)
			switch f.Kind {
			case CableCreditReset:
				held = 0
			case CableCredit:
				held += int32(binary.BigEndian.Uint32(f.Payload))
			}
		}
		require.Equal(t, int32(2), held, "round %d: the peer's credits after a reset and a grant of 2", round)
	}
}
