package xdomain_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
	"tbstream/xdomain"
)

// Topology of the path tests (the docs' example):
//
//	host1                                           host2
//	NHI adapter 5 ── router 0 ── lane 3 ═══cable═══ lane 1 ── router 0 ── NHI adapter 5
//	                 sees host2 at route 0x503       sees host1 at route 0x1
//
// Expected path entries after EnableDMAPaths on host2 with
// {TransmitPath 8, TransmitRing t, ReceivePath 9, ReceiveRing r}:
//
//	adapter  in HopID  → out adapter  out HopID   path
//	1        9           5            r           DMA RX
//	5        t           1            8           DMA TX
type pathHost struct {
	emu    *emu.Host
	nhi    *nhi.NHI
	ctl    *nhi.ControlChannel
	tx, rx *nhi.Ring
}

func newPathHost(t *testing.T) *pathHost {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := emu.NewHost(emu.Config{Logger: log})
	require.NoError(t, err)
	n, err := nhi.Probe(h, nhi.Options{Logger: log})
	require.NoError(t, err)
	c, err := n.OpenControl(nhi.ControlConfig{Logger: log})
	require.NoError(t, err)
	p := &pathHost{emu: h, nhi: n, ctl: c}
	flags := nhi.RingFrame | nhi.RingE2E
	p.tx, err = n.AllocTxRing(nhi.RingConfig{Hop: -1, Size: 32, Flags: flags})
	require.NoError(t, err)
	p.rx, err = n.AllocRxRing(nhi.RingConfig{Hop: -1, Size: 32, Flags: flags, E2ETxHop: p.tx.Hop(), SOFMask: 1 << 1, EOFMask: 1 << 2})
	require.NoError(t, err)
	require.NoError(t, p.tx.Start())
	require.NoError(t, p.rx.Start())
	t.Cleanup(func() { c.Close(); n.Close(); h.Close() })
	return p
}

func entry(t *testing.T, p *pathHost, adapter uint8, hopID int) [nhi.PathEntryWords]uint32 {
	w, err := p.ctl.ReadConfig(context.Background(), 0, ctl.SpacePath, adapter, uint16(nhi.PathEntryWords*hopID), nhi.PathEntryWords)
	require.NoError(t, err)
	return [nhi.PathEntryWords]uint32(w)
}

func roundTrip(t *testing.T, from, to *pathHost, payload string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := from.tx.Write(ctx, []byte(payload), 1, 2)
	require.NoError(t, err)
	for to.rx.RxReady() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("no frame arrived")
		case <-time.After(100 * time.Microsecond):
		}
	}
	f := to.rx.RxFrames(nil)[0]
	require.Equal(t, payload, string(f.Data))
	require.NoError(t, to.rx.RxRelease(1))
}

func TestDMAPaths(t *testing.T) {
	ctx := context.Background()
	host1, host2 := newPathHost(t), newPathHost(t)
	_, _, err := emu.ConnectInProcess(host1.emu, emu.Port{Adapter: 3, PeerRoute: 0x503}, host2.emu, emu.Port{Adapter: 1, PeerRoute: 0x1})
	require.NoError(t, err)

	p2 := xdomain.DMAPaths{TransmitPath: 8, TransmitRing: host2.tx.Hop(), ReceivePath: 9, ReceiveRing: host2.rx.Hop()}
	p1 := xdomain.DMAPaths{TransmitPath: 9, TransmitRing: host1.tx.Hop(), ReceivePath: 8, ReceiveRing: host1.rx.Hop()}
	require.NoError(t, xdomain.EnableDMAPaths(ctx, host2.ctl, 0x1, p2))
	require.NoError(t, xdomain.EnableDMAPaths(ctx, host1.ctl, 0x503, p1))
	require.NoError(t, xdomain.EnableDMAPaths(ctx, host1.ctl, 0x503, p1), "enabling twice is not an error")

	for _, tc := range []struct {
		adapter uint8
		in      int
		out     uint8
		outHop  int
		name    string
		fc      uint32
		credits uint8
	}{
		// RX: the destination hop, no egress flow control; credits
		// min(60 total − 2 control, 14).
		{1, 9, 5, host2.rx.Hop(), "DMA RX", nhi.PathCS1IngressFC, 14},
		{5, host2.tx.Hop(), 1, 8, "DMA TX", nhi.PathCS1IngressFC | nhi.PathCS1EgressFC, 14},
	} {
		e := entry(t, host2, tc.adapter, tc.in)
		out, outHop, valid := nhi.PathEntryTarget(e)
		require.True(t, valid, tc.name)
		require.Equal(t, tc.out, out, tc.name)
		require.Equal(t, uint16(tc.outHop), outHop, tc.name)
		require.Equal(t, uint32(nhi.DMAPathPriority), e[1]&nhi.PathCS1PriorityMask>>nhi.PathCS1PriorityShift, tc.name)
		require.Equal(t, uint32(nhi.DMAPathWeight), e[1]&nhi.PathCS1WeightMask, tc.name)
		require.Equal(t, tc.fc, e[1]&(nhi.PathCS1IngressFC|nhi.PathCS1EgressFC|nhi.PathCS1IngressShared|nhi.PathCS1EgressShared), tc.name)
		require.Equal(t, tc.credits, nhi.PathEntryCredits(e), tc.name)
	}
	roundTrip(t, host1, host2, "host1 to host2")
	roundTrip(t, host2, host1, "host2 to host1")

	// HopIDs and rings out of range; a route whose first hop is no lane adapter.
	for _, bad := range []xdomain.DMAPaths{
		{ReceivePath: 7, ReceiveRing: host2.rx.Hop()},
		{ReceivePath: 20, ReceiveRing: host2.rx.Hop()},
		{TransmitPath: 8, TransmitRing: host2.nhi.HopCount()},
	} {
		require.ErrorIs(t, xdomain.EnableDMAPaths(ctx, host2.ctl, 0x1, bad), xdomain.ErrPathRange, "%+v", bad)
	}
	require.ErrorIs(t, xdomain.EnableDMAPaths(ctx, host2.ctl, 0x5, p2), xdomain.ErrTopology)
	require.ErrorIs(t, xdomain.EnableDMAPaths(ctx, host2.ctl, 0, p2), xdomain.ErrTopology)

	// A TX conflict after a fresh RX path: the RX path is rolled back.
	other, err := host2.nhi.AllocRxRing(nhi.RingConfig{Hop: -1, Size: 8, Flags: nhi.RingFrame})
	require.NoError(t, err)
	defer other.Free()
	conflict := xdomain.DMAPaths{ReceivePath: 10, ReceiveRing: other.Hop(), TransmitPath: 11, TransmitRing: host2.tx.Hop()}
	require.ErrorIs(t, xdomain.EnableDMAPaths(ctx, host2.ctl, 0x1, conflict), xdomain.ErrPathBusy)
	_, _, valid := nhi.PathEntryTarget(entry(t, host2, 1, 10))
	require.False(t, valid, "rolled back")

	// Disabled: both entries are invalid again.
	require.NoError(t, xdomain.DisableDMAPaths(ctx, host2.ctl, 0x1, p2))
	_, _, valid = nhi.PathEntryTarget(entry(t, host2, 1, 9))
	require.False(t, valid)
	_, _, valid = nhi.PathEntryTarget(entry(t, host2, 5, host2.tx.Hop()))
	require.False(t, valid)
	require.NoError(t, xdomain.DisableDMAPaths(ctx, host2.ctl, 0x1, p2), "disabling twice is not an error")
}

// fewBuffers reports a lane adapter with only total buffers in ADP_CS_4.
type fewBuffers struct {
	xdomain.ConfigAccess
	lane  uint8
	total uint32
}

func (f fewBuffers) ReadConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, length int) ([]uint32, error) {
	w, err := f.ConfigAccess.ReadConfig(ctx, route, space, adapter, offset, length)
	if err == nil && space == ctl.SpaceAdapter && adapter == f.lane && int(offset) <= nhi.AdpCS4 && int(offset)+length > nhi.AdpCS4 {
		w[nhi.AdpCS4-int(offset)] = f.total << nhi.AdpCS4TotalBuffersShift
	}
	return w, err
}

func TestRxPathCreditsAreUsableCreditsAtMost14(t *testing.T) {
	ctx := context.Background()
	host := newPathHost(t)
	for _, tc := range []struct {
		total uint32
		want  uint8
	}{
		{10, 8},  // 10 − 2 control credits
		{16, 14}, // 14 usable: TB_DMA_CREDITS
		{60, 14},
		{1, 14}, // fewer than the control credits: Linux's unsigned subtraction wraps
	} {
		c := fewBuffers{ConfigAccess: host.ctl, lane: 1, total: tc.total}
		p := xdomain.DMAPaths{ReceivePath: 9, ReceiveRing: host.rx.Hop(), TransmitPath: 8, TransmitRing: host.tx.Hop()}
		require.NoError(t, xdomain.EnableDMAPaths(ctx, c, 0x1, p))
		require.Equal(t, tc.want, nhi.PathEntryCredits(entry(t, host, 1, 9)), "total buffers %d", tc.total)
		require.Equal(t, uint8(nhi.DMACredits), nhi.PathEntryCredits(entry(t, host, 5, host.tx.Hop())), "TX keeps 14")
		require.NoError(t, xdomain.DisableDMAPaths(ctx, c, 0x1, p))
	}
}
