package nhi_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/emu"
)

// dmaSpy wraps a Device and keeps the DMA memory it hands out, in
// allocation order, counting frees.
type dmaSpy struct {
	nhi.Device
	mu   sync.Mutex
	mems []*spyMemory
}

type spyMemory struct {
	nhi.Memory
	mu    sync.Mutex
	freed int
}

func (m *spyMemory) Free() error {
	m.mu.Lock()
	m.freed++
	m.mu.Unlock()
	return m.Memory.Free()
}

func (m *spyMemory) frees() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freed
}

func (d *dmaSpy) AllocDMA(size int) (nhi.Memory, error) {
	mem, err := d.Device.AllocDMA(size)
	if err != nil {
		return nil, err
	}
	m := &spyMemory{Memory: mem}
	d.mu.Lock()
	d.mems = append(d.mems, m)
	d.mu.Unlock()
	return m, nil
}

func (d *dmaSpy) last(n int) []*spyMemory {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*spyMemory(nil), d.mems[len(d.mems)-n:]...)
}

func probeSpy(t *testing.T) (*nhi.NHI, *dmaSpy) {
	h, err := emu.NewHost(emu.Config{Logger: quiet()})
	require.NoError(t, err)
	spy := &dmaSpy{Device: h}
	n, err := nhi.Probe(spy, nhi.Options{Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return n, spy
}

// allocTx allocates a TX ring and returns it with its descriptor memory.
func allocTx(t *testing.T, n *nhi.NHI, spy *dmaSpy, hop, size int, flags nhi.RingFlag) (*nhi.Ring, []byte) {
	tx, err := n.AllocTxRing(nhi.RingConfig{Hop: hop, Size: size, Flags: flags})
	require.NoError(t, err)
	desc := spy.last(2)[0].Bytes() // descriptors, then the ring's own buffers
	require.NoError(t, tx.Start())
	t.Cleanup(tx.Free)
	return tx, desc
}

func freeOf(p *nhi.TxPool) int { return p.Stats().Free }

// TestTxPoolLentBuffers: buffers of another pool are posted in place
// (each descriptor carries its buffer's IOVA); a commit larger than the
// free descriptors posts what fits and leaves the rest reserved; a full
// ring says so and keeps the reservation; stopping the ring gives the
// posted buffers back; the accounting returns to full.
func TestTxPoolLentBuffers(t *testing.T) {
	n, spy := probeSpy(t)
	// E2E and no path: frames wait for credits, so they stay posted.
	tx, desc := allocTx(t, n, spy, 3, 8, nhi.RingFrame|nhi.RingE2E)
	pool, err := n.AllocTxPool(16)
	require.NoError(t, err)
	mem := spy.last(1)[0]
	require.Equal(t, 16, pool.Size())

	var b nhi.TxBuffers
	require.Equal(t, 10, pool.Reserve(&b, 10))
	require.Equal(t, 6, freeOf(pool))
	runs := b.Runs()
	require.Len(t, runs, 1, "a fresh pool lends one run")
	require.Len(t, runs[0], 10*nhi.SlotSize)
	require.Same(t, &mem.Bytes()[0], &runs[0][0], "the run is the pool's memory")
	other, err := n.AllocTxPool(2)
	require.NoError(t, err)
	require.Zero(t, other.Reserve(&b, 1), "a TxBuffers holds one pool's buffers")
	require.Equal(t, 2, other.Stats().Free)

	posted, err := tx.TxCommit(&b, 9*nhi.SlotSize+100, 1, 2)
	require.NoError(t, err)
	require.Equal(t, 7*nhi.SlotSize, posted, "7 free descriptors: 7 full frames, a short post")
	require.Equal(t, 3, b.Len(), "the unposted buffers stay reserved")
	for i := range 7 {
		require.Equal(t, mem.IOVA()+uint64(i*nhi.SlotSize), nhi.LoadDescAddr(desc, i), "descriptor %d carries pool buffer %d", i, i)
		require.Equal(t, nhi.SlotSize, nhi.ControlSize(nhi.LoadDescControl(desc, i)))
	}
	require.Same(t, &mem.Bytes()[7*nhi.SlotSize], &b.Runs()[0][0], "what is left starts at buffer 7")
	require.Zero(t, tx.TxFree())
	_, err = tx.TxCommit(&b, 100, 1, 2)
	require.ErrorIs(t, err, nhi.ErrRingFull)
	require.Equal(t, 3, b.Len(), "a full ring leaves the reservation alone")
	require.ErrorIs(t, tx.TxReserve(&nhi.TxBuffers{}, 1), nhi.ErrRingFull)

	require.Equal(t, 7, tx.Stop())
	require.Equal(t, 13, freeOf(pool), "the stop gave the 7 posted buffers back")
	b.Release()
	require.Equal(t, 16, freeOf(pool), "accounting back to full")
	require.Zero(t, b.Len())
}

// TestTxPoolOrderAndWrap: free buffers go out oldest first, so the order
// buffers come back in (unused ones at Release, posted ones at
// completion) decides the runs; descriptors wrap around the ring while
// buffers of two pools (the ring's own, a lent one) alternate.
func TestTxPoolOrderAndWrap(t *testing.T) {
	n, spy := probeSpy(t)
	// Without E2E and without a path the emulated NHI completes every
	// frame at once (dropping it): the ring keeps moving.
	tx, desc := allocTx(t, n, spy, 3, 8, nhi.RingFrame)
	pool, err := n.AllocTxPool(16)
	require.NoError(t, err)
	mem := spy.last(1)[0]
	runLens := func(b *nhi.TxBuffers) []int {
		var l []int
		for _, r := range b.Runs() {
			l = append(l, len(r)/nhi.SlotSize)
		}
		return l
	}

	var b nhi.TxBuffers
	require.Equal(t, 4, pool.Reserve(&b, 4)) // 0..3
	_, err = tx.TxCommit(&b, 2*nhi.SlotSize, 1, 2)
	require.NoError(t, err)
	b.Release() // 2, 3 back before 0, 1 complete
	require.Eventually(t, func() bool { return tx.TxFree() == 7 && freeOf(pool) == 16 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 16, pool.Reserve(&b, 100))
	require.Equal(t, []int{12, 2, 2}, runLens(&b), "4..15, then 2 and 3 (given back), then 0 and 1 (completed)")
	b.Release()

	// 40 frames through 7 descriptors, lent and own buffers in turn.
	var own nhi.TxBuffers
	head := 2
	for i := range 10 {
		var src *nhi.TxBuffers
		require.Eventually(t, func() bool { return tx.TxFree() >= 4 }, 5*time.Second, time.Millisecond)
		if i%2 == 0 {
			require.Equal(t, 4, pool.Reserve(&b, 4))
			src = &b
		} else {
			require.NoError(t, tx.TxReserve(&own, 4))
			src = &own
		}
		first := src.Runs()[0]
		posted, err := tx.TxCommit(src, 4*nhi.SlotSize, 1, 2)
		require.NoError(t, err)
		require.Equal(t, 4*nhi.SlotSize, posted)
		if i%2 == 0 {
			// The descriptor's IOVA is the lent buffer's.
			off := uintptrDiff(mem.Bytes(), first)
			require.Equal(t, mem.IOVA()+uint64(off), nhi.LoadDescAddr(desc, head))
		} else {
			addr := nhi.LoadDescAddr(desc, head)
			require.False(t, addr >= mem.IOVA() && addr < mem.IOVA()+16*nhi.SlotSize, "own buffers are not the lent pool's")
		}
		head = (head + 4) % 8
		require.Zero(t, src.Len())
	}
	require.Eventually(t, func() bool { return tx.TxFree() == 7 && freeOf(pool) == 16 }, 5*time.Second, time.Millisecond)
	require.EqualValues(t, 2+40, tx.Stats().Posted)
	require.EqualValues(t, 2+40, tx.Stats().Completed)
}

// uintptrDiff is the offset of b in mem (b must lie in mem).
func uintptrDiff(mem, b []byte) int {
	for off := 0; off < len(mem); off += nhi.SlotSize {
		if &mem[off] == &b[0] {
			return off
		}
	}
	panic("not in mem")
}

// TestTxPoolClose: a closed pool lends nothing more, and its memory is
// freed only once the last buffer is back: posted ones at the ring's stop,
// reserved ones at Release.
func TestTxPoolClose(t *testing.T) {
	n, spy := probeSpy(t)
	tx, _ := allocTx(t, n, spy, 3, 8, nhi.RingFrame|nhi.RingE2E)
	pool, err := n.AllocTxPool(8)
	require.NoError(t, err)
	mem := spy.last(1)[0]
	var posted, held nhi.TxBuffers
	require.Equal(t, 3, pool.Reserve(&posted, 3))
	_, err = tx.TxCommit(&posted, 3*nhi.SlotSize, 1, 2)
	require.NoError(t, err)
	require.Equal(t, 2, pool.Reserve(&held, 2))

	pool.Close()
	require.Zero(t, pool.Reserve(&nhi.TxBuffers{}, 1), "closed: no more lending")
	require.Zero(t, mem.frees(), "buffers are out: the memory stays")
	tx.Stop()
	require.Zero(t, mem.frees(), "two buffers are still held")
	held.Release()
	require.Equal(t, 1, mem.frees(), "freed with the last buffer, once")
	require.Equal(t, 8, freeOf(pool))

	// A ring's own pool goes with the ring.
	tx2, err := n.AllocTxRing(nhi.RingConfig{Hop: 4, Size: 4, Flags: nhi.RingFrame})
	require.NoError(t, err)
	ownMem := spy.last(1)[0]
	tx2.Free()
	require.Equal(t, 1, ownMem.frees())
}
