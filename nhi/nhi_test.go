package nhi_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// recorder wraps a Device and records register writes.
type recorder struct {
	nhi.Device
	mu     sync.Mutex
	writes []regWrite
}

type regWrite struct {
	off nhi.Reg
	v   uint32
}

func (r *recorder) Write32(off nhi.Reg, v uint32) {
	r.mu.Lock()
	r.writes = append(r.writes, regWrite{off, v})
	r.mu.Unlock()
	r.Device.Write32(off, v)
}

func (r *recorder) take() []regWrite {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.writes
	r.writes = nil
	return w
}

func probe(t *testing.T) (*nhi.NHI, *recorder, *emu.Host) {
	h, err := emu.NewHost(emu.Config{Logger: quiet()})
	require.NoError(t, err)
	rec := &recorder{Device: h}
	n, err := nhi.Probe(rec, nhi.Options{Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return n, rec, h
}

func TestDescriptorControlWord(t *testing.T) {
	// The flag values in the 32-bit word, as the reference derives them.
	require.Equal(t, uint32(0x00400000), nhi.DescFlagPosted)
	require.Equal(t, uint32(0x00800000), nhi.DescFlagInterrupt)
	require.Equal(t, uint32(0x00200000), nhi.DescFlagCompleted)
	for _, tc := range []struct {
		size     int
		sof, eof uint8
		want     uint32
	}{
		{1, 1, 2, 0x00012001},
		{4095, 1, 2, 0x00012fff},
		{4096, 1, 2, 0x00012000}, // 4096 is encoded as 0
		{256, 6, 6, 0x00066100},
	} {
		w := nhi.ControlWord(tc.size, tc.sof, tc.eof, 0)
		require.Equal(t, tc.want, w)
		require.Equal(t, tc.size, nhi.ControlSize(w))
		require.Equal(t, tc.sof, nhi.ControlSOF(w))
		require.Equal(t, tc.eof, nhi.ControlEOF(w))
	}
	mem := make([]byte, 32)
	nhi.StoreDesc(mem, 1, 0x1122334455667788, nhi.ControlWord(100, 1, 2, nhi.DescFlagPosted))
	require.Equal(t, []byte{0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 100, 0x20, 0x41, 0, 0, 0, 0, 0}, mem[16:])
	require.Equal(t, uint64(0x1122334455667788), nhi.LoadDescAddr(mem, 1))
}

func TestRegisterLayout(t *testing.T) {
	require.Equal(t, nhi.Reg(0x38), nhi.TxRingReg(3, nhi.RingIndices))
	require.Equal(t, nhi.Reg(0x8038), nhi.RxRingReg(3, nhi.RingIndices))
	require.Equal(t, nhi.Reg(0x19840), nhi.TxOptionsReg(2, 0))
	require.Equal(t, nhi.Reg(0x29844), nhi.RxOptionsReg(2, nhi.RingOptionsPDF))
	reg, shift := nhi.IVRReg(9)
	require.Equal(t, nhi.Reg(0x38c44), reg)
	require.Equal(t, uint(4), shift)
	require.Equal(t, 2, nhi.NotifyRegCount(12))
	require.Equal(t, 1, nhi.InterruptRegCount(12))
	require.Equal(t, 13, nhi.InterruptIndex(12, 1, true))
	require.Equal(t, uint32(0x7ff000), uint32(nhi.RxOptionsE2EHopMask))
}

func TestAllocRing(t *testing.T) {
	n, _, _ := probe(t)
	require.Equal(t, emu.DefaultRings, n.HopCount())
	for _, size := range []int{0, 1, 4097} {
		_, err := n.AllocTxRing(nhi.RingConfig{Hop: -1, Size: size, Flags: nhi.RingFrame})
		require.ErrorIs(t, err, nhi.ErrInvalid, "size %d", size)
	}
	_, err := n.AllocRxRing(nhi.RingConfig{Hop: -1, Size: 32, Flags: nhi.RingE2E, E2ETxHop: 99})
	require.ErrorIs(t, err, nhi.ErrInvalid)
	_, err = n.AllocTxRing(nhi.RingConfig{Hop: n.HopCount(), Size: 32})
	require.ErrorIs(t, err, nhi.ErrInvalid)

	var rings []*nhi.Ring
	for i := 1; i < n.HopCount(); i++ {
		size := 32
		if i == 1 {
			size = 4096
		}
		r, err := n.AllocTxRing(nhi.RingConfig{Hop: -1, Size: size, Flags: nhi.RingFrame})
		require.NoError(t, err)
		require.Equal(t, i, r.Hop(), "automatic allocation starts at ring 1")
		rings = append(rings, r)
	}
	_, err = n.AllocTxRing(nhi.RingConfig{Hop: -1, Size: 32})
	require.ErrorIs(t, err, nhi.ErrNoRing)
	_, err = n.AllocTxRing(nhi.RingConfig{Hop: 3, Size: 32})
	require.ErrorIs(t, err, nhi.ErrRingBusy)
	rings[2].Free()
	r, err := n.AllocTxRing(nhi.RingConfig{Hop: 3, Size: 32})
	require.NoError(t, err)
	r.Free()
	for _, r := range rings {
		r.Free()
	}
}

// TestStartStopRegisters checks what Start and Stop program, and that the
// doorbells are written once per descriptor, TX head in the upper half and
// RX head in the lower.
func TestStartStopRegisters(t *testing.T) {
	n, rec, h := probe(t)
	tx, err := n.AllocTxRing(nhi.RingConfig{Hop: 2, Size: 32, Flags: nhi.RingFrame | nhi.RingE2E})
	require.NoError(t, err)
	rx, err := n.AllocRxRing(nhi.RingConfig{Hop: 2, Size: 64, Flags: nhi.RingFrame | nhi.RingE2E, E2ETxHop: 2, SOFMask: 1 << 1, EOFMask: 1<<2 | 1<<3})
	require.NoError(t, err)
	require.NoError(t, tx.SetThrottling(8192))
	require.NoError(t, tx.Start())
	require.ErrorIs(t, tx.SetThrottling(0), nhi.ErrRingBusy)
	rec.take()
	require.NoError(t, rx.Start())

	require.Equal(t, uint32(32), h.Read32(nhi.TxRingReg(2, nhi.RingSizeReg)))
	require.Equal(t, nhi.RingFlagEnable|nhi.RingFlagE2EFlowControl, h.Read32(nhi.TxOptionsReg(2, 0)))
	require.Equal(t, uint32(64), h.Read32(nhi.RxRingReg(2, nhi.RingSizeReg)), "frame mode: frame size 0")
	require.Equal(t, nhi.RingFlagEnable|nhi.RingFlagE2EFlowControl|2<<12, h.Read32(nhi.RxOptionsReg(2, 0)))
	require.Equal(t, uint32(0x2)<<16|0xc, h.Read32(nhi.RxOptionsReg(2, nhi.RingOptionsPDF)))
	require.NotZero(t, h.Read32(nhi.RegRingInterruptBase)&(1<<2|1<<(12+2)), "TX and RX interrupts enabled")

	var doorbells []uint32
	for _, w := range rec.take() {
		if w.off == nhi.RxRingReg(2, nhi.RingIndices) {
			doorbells = append(doorbells, w.v)
		}
	}
	require.Equal(t, []uint32{63}, doorbells, "RX primed with size-1 descriptors, one doorbell")

	var b nhi.TxBuffers
	require.NoError(t, tx.TxReserve(&b, 1))
	copy(b.Runs()[0], "x")
	_, err = tx.TxCommit(&b, 1, 1, 2)
	require.NoError(t, err)
	w := rec.take()
	require.Equal(t, regWrite{nhi.TxRingReg(2, nhi.RingIndices), 1 << 16}, w[len(w)-1])

	require.NoError(t, tx.TxReserve(&b, 1)) // committed after the stop
	require.Equal(t, 1, tx.Stop(), "no path: the frame was still in flight")
	rx.Stop()
	require.Zero(t, h.Read32(nhi.TxOptionsReg(2, 0)))
	require.Zero(t, h.Read32(nhi.RxRingReg(2, nhi.RingSizeReg)))
	require.Zero(t, h.Read32(nhi.RegRingInterruptBase)&(1<<2|1<<(12+2)))
	_, err = tx.TxCommit(&b, 1, 1, 2)
	require.ErrorIs(t, err, nhi.ErrShutdown)
	b.Release()
	require.ErrorIs(t, tx.TxReserve(&b, 1), nhi.ErrShutdown)
	tx.Free()
	rx.Free()
}

// txDoorbells returns the TX doorbell values of ring hop among w.
func txDoorbells(w []regWrite, hop int) []uint32 {
	var heads []uint32
	for _, x := range w {
		if x.off == nhi.TxRingReg(hop, nhi.RingIndices) {
			heads = append(heads, x.v>>16)
		}
	}
	return heads
}

func runLens(runs [][]byte) []int {
	var n []int
	for _, r := range runs {
		n = append(n, len(r))
	}
	return n
}

// TestTxBatch: TxReserve hands out the free slots as contiguous runs (two
// where the ring wraps), TxCommit posts what was filled as full frames and
// a tail with one doorbell, a partial fill leaves the rest free, and a
// full ring says so.
func TestTxBatch(t *testing.T) {
	n, rec, h := probe(t)
	// Without E2E and without a path the emulated NHI completes (and
	// drops, counting) every frame at once: the ring keeps moving.
	tx, err := n.AllocTxRing(nhi.RingConfig{Hop: 3, Size: 8, Flags: nhi.RingFrame})
	require.NoError(t, err)
	require.NoError(t, tx.Start())
	defer tx.Free()
	rec.take()

	var b nhi.TxBuffers
	require.NoError(t, tx.TxReserve(&b, 3))
	require.Equal(t, []int{3 * nhi.SlotSize}, runLens(b.Runs()), "3 of 7 free slots, one run")
	n2, err := tx.TxCommit(&b, nhi.SlotSize+10, 1, 2)
	require.NoError(t, err, "a partial fill: two frames")
	require.Equal(t, nhi.SlotSize+10, n2)
	require.Equal(t, 1, b.Len(), "the unfilled buffer stays reserved")
	b.Release()
	require.Equal(t, []uint32{2}, txDoorbells(rec.take(), 3), "one doorbell for both")
	require.Eventually(t, func() bool { return tx.TxFree() == 7 }, 5*time.Second, time.Millisecond)

	require.NoError(t, tx.TxReserve(&b, 100))
	require.Equal(t, []int{5 * nhi.SlotSize, nhi.SlotSize, nhi.SlotSize}, runLens(b.Runs()),
		"oldest free first: buffers 3..7, then 2 (given back unused), then 0 (completed after)")
	for i, run := range b.Runs() {
		for j := range run {
			run[j] = byte(i + 1)
		}
	}
	_, err = tx.TxCommit(&b, 7*nhi.SlotSize, 1, 2)
	require.NoError(t, err)
	require.Equal(t, []uint32{1}, txDoorbells(rec.take(), 3), "head wrapped to 1, one doorbell for 7 frames")
	require.Eventually(t, func() bool { return h.Counters().TxNoPath == 9 }, 5*time.Second, time.Millisecond,
		"every frame went to the (missing) path")
	require.EqualValues(t, 9, tx.Stats().Posted)

	_, err = tx.TxCommit(&b, 8*nhi.SlotSize, 1, 2)
	require.ErrorIs(t, err, nhi.ErrInvalid, "more than the buffers hold")
	_, err = tx.TxCommit(&b, 0, 1, 2)
	require.ErrorIs(t, err, nhi.ErrInvalid)
	require.ErrorIs(t, tx.TxReserve(&b, 0), nhi.ErrInvalid)
}

// TestTxBatchRingFull: with E2E and no path frames wait; the ring fills
// and TxReserve, TxCommit and a non-blocking look say so.
func TestTxBatchRingFull(t *testing.T) {
	n, _, _ := probe(t)
	tx, err := n.AllocTxRing(nhi.RingConfig{Hop: 3, Size: 4, Flags: nhi.RingFrame | nhi.RingE2E})
	require.NoError(t, err)
	require.NoError(t, tx.Start())
	defer tx.Free()
	var b nhi.TxBuffers
	require.NoError(t, tx.TxReserve(&b, 10))
	require.Equal(t, []int{3 * nhi.SlotSize}, runLens(b.Runs()))
	_, err = tx.TxCommit(&b, 3*nhi.SlotSize, 1, 2)
	require.NoError(t, err)
	require.Zero(t, tx.TxFree())
	require.ErrorIs(t, tx.TxReserve(&b, 1), nhi.ErrRingFull)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, tx.WaitTx(ctx), context.DeadlineExceeded)
}

// TestRawRingLimits: a raw ring programs frame size 256 and refuses bigger
// frames.
func TestRawRingLimits(t *testing.T) {
	n, _, h := probe(t)
	rx, err := n.AllocRxRing(nhi.RingConfig{Hop: 4, Size: 8})
	require.NoError(t, err)
	require.NoError(t, rx.Start())
	require.Equal(t, uint32(256<<16|8), h.Read32(nhi.RxRingReg(4, nhi.RingSizeReg)))
	require.Equal(t, nhi.RingFlagEnable|nhi.RingFlagRaw, h.Read32(nhi.RxOptionsReg(4, 0)))
	tx, err := n.AllocTxRing(nhi.RingConfig{Hop: 4, Size: 8, Flags: nhi.RingNoInterrupt})
	require.NoError(t, err)
	require.NoError(t, tx.Start())
	var b nhi.TxBuffers
	require.NoError(t, tx.TxReserve(&b, 1))
	_, err = tx.TxCommit(&b, 257, 1, 1)
	require.ErrorIs(t, err, nhi.ErrInvalid)
	b.Release()
	_, err = tx.Write(context.Background(), make([]byte, 257), 1, 1)
	require.ErrorIs(t, err, nhi.ErrInvalid)
	require.Zero(t, h.Read32(nhi.RegRingInterruptBase)&(1<<4), "busy-poll ring has no interrupt")
	tx.Free()
	rx.Free()
}

// TestConfigRetries: a config read nobody answers is sent ControlRetries
// times with seq = attempt, then times out.
func TestConfigRetries(t *testing.T) {
	n1, _, h1 := probe(t)
	n2, _, h2 := probe(t)
	_, _, err := emu.ConnectInProcess(h1, emu.Port{Adapter: 1}, h2, emu.Port{Adapter: 1})
	require.NoError(t, err)
	c1, err := n1.OpenControl(nhi.ControlConfig{Timeout: 20 * time.Millisecond, Logger: quiet()})
	require.NoError(t, err)
	defer c1.Close()
	var mu sync.Mutex
	var seqs []uint8
	c2, err := n2.OpenControl(nhi.ControlConfig{Logger: quiet(), Handler: func(p ctl.Packet) {
		if r, ok := p.(*ctl.ConfigRead); ok {
			mu.Lock()
			seqs = append(seqs, r.Addr.Seq)
			mu.Unlock()
		}
	}})
	require.NoError(t, err)
	defer c2.Close()

	// The peer (another domain) never answers config reads.
	_, err = c1.ReadConfig(context.Background(), 0x1, ctl.SpaceRouter, 0, 0, 1)
	require.ErrorIs(t, err, nhi.ErrTimeout)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(seqs) == nhi.ControlRetries }, time.Second, time.Millisecond)
	require.Equal(t, []uint8{0, 1, 2, 3}, seqs)
	require.Equal(t, uint64(nhi.ControlRetries), c1.Stats().Timeouts)

	// Our own router answers; a bad address gets its ERROR.
	v, err := c1.ReadConfig(context.Background(), 0, ctl.SpaceAdapter, 5, nhi.AdpCS2, 1)
	require.NoError(t, err)
	require.Equal(t, nhi.AdapterNHI, v[0])
	_, err = c1.ReadConfig(context.Background(), 0, ctl.SpaceAdapter, 40, 0, 1)
	var cfgErr *nhi.ConfigError
	require.ErrorAs(t, err, &cfgErr)
	require.Equal(t, ctl.ErrorNoSuchPort, cfgErr.Code)
	_, err = c1.ReadConfig(context.Background(), 0, ctl.SpaceRouter, 0, 0, 61)
	require.ErrorIs(t, err, nhi.ErrInvalid)
}
