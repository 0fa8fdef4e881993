package emu_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
)

// Stream PDFs (USB4STREAM): SOF of every frame, EOF of data and of CLOSE.
const (
	pdfFrameStart = 1
	pdfData       = 2
	pdfClose      = 3
	nhiAdapter    = 5 // the emulated NHI adapter
)

// testHost is an emulated host with its driver and control channel.
type testHost struct {
	emu    *emu.Host
	nhi    *nhi.NHI
	ctl    *nhi.ControlChannel
	events chan ctl.Packet // unsolicited control packets
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestHost(tb testing.TB, name string) *testHost {
	return newTestHostOn(tb, name, func(d nhi.Device) nhi.Device { return d })
}

// newTestHostOn is newTestHost with the driver on wrap(the emulated NHI).
func newTestHostOn(tb testing.TB, name string, wrap func(nhi.Device) nhi.Device) *testHost {
	return newTestHostWith(tb, emu.Config{Name: name, Logger: quietLogger()}, wrap)
}

// newTestHostWith is newTestHostOn with the host made from cfg.
func newTestHostWith(tb testing.TB, cfg emu.Config, wrap func(nhi.Device) nhi.Device) *testHost {
	h, err := emu.NewHost(cfg)
	require.NoError(tb, err)
	n, err := nhi.Probe(wrap(h), nhi.Options{Logger: quietLogger()})
	require.NoError(tb, err)
	th := &testHost{emu: h, nhi: n, events: make(chan ctl.Packet, 64)}
	th.ctl, err = n.OpenControl(nhi.ControlConfig{Timeout: 500 * time.Millisecond, Logger: quietLogger(), Handler: func(p ctl.Packet) {
		select {
		case th.events <- p:
		default:
		}
	}})
	require.NoError(tb, err)
	tb.Cleanup(func() {
		th.ctl.Close()
		th.nhi.Close()
		h.Close()
	})
	return th
}

// cableKinds are the cable transports every fabric test runs over.
// "shm" is a unix socket whose hosts carry the frames through shared
// memory (emu.Config.SharedMemory); "unix" keeps them on the socket.
var cableKinds = []string{"inproc", "unix", "shm", "tcp"}

// connect joins a and b; a sees b at routeB (lane adapter routeB&0xff), b
// sees a at routeA.
func connect(tb testing.TB, kind string, a *testHost, routeB ctl.Route, b *testHost, routeA ctl.Route) (*emu.Cable, *emu.Cable) {
	pa := emu.Port{Adapter: uint8(routeB & 0xff), PeerRoute: routeB}
	pb := emu.Port{Adapter: uint8(routeA & 0xff), PeerRoute: routeA}
	if kind == "inproc" {
		ca, cb, err := emu.ConnectInProcess(a.emu, pa, b.emu, pb)
		require.NoError(tb, err)
		tb.Cleanup(func() { ca.Close() })
		return ca, cb
	}
	var ln net.Listener
	var err error
	if kind == "unix" || kind == "shm" {
		ln, err = emu.ListenUnix(filepath.Join(tb.TempDir(), "cable.sock"))
	} else {
		ln, err = b.emu.ListenTCP("")
	}
	require.NoError(tb, err)
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var cb *emu.Cable
	var errB error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cb, errB = b.emu.Accept(ctx, ln, pb)
	}()
	ca, err := a.emu.Dial(ctx, ln.Addr().Network(), ln.Addr().String(), pa)
	wg.Wait()
	require.NoError(tb, err)
	require.NoError(tb, errB)
	tb.Cleanup(func() { ca.Close(); cb.Close() })
	require.Equal(tb, kind == "shm", ca.SharedMemory(), "dialer's transport")
	require.Equal(tb, kind == "shm", cb.SharedMemory(), "listener's transport")
	return ca, cb
}

// fabric is two hosts joined by a cable with the docs' routes: host1
// sees host2 at 0x503 (lane adapter 3), host2 sees host1 at 0x1 (lane
// adapter 1).
type fabric struct {
	host1, host2   *testHost
	cable1, cable2 *emu.Cable
	plug1, plug2   *ctl.Event
}

const (
	route1to2 ctl.Route = 0x503
	route2to1 ctl.Route = 0x1
	lane1     uint8     = 3
	lane2     uint8     = 1
)

func newFabric(tb testing.TB, kind string) *fabric {
	return newFabricOf(tb, kind, newTestHostFor(tb, kind, "host1"), newTestHostFor(tb, kind, "host2"))
}

// newTestHostFor is newTestHost for a cable of kind: an "shm" cable needs
// hosts that offer shared memory.
func newTestHostFor(tb testing.TB, kind, name string) *testHost {
	return newTestHostWith(tb, emu.Config{Name: name, Logger: quietLogger(), SharedMemory: kind == "shm"}, func(d nhi.Device) nhi.Device { return d })
}

func newFabricOf(tb testing.TB, kind string, host1, host2 *testHost) *fabric {
	f := &fabric{host1: host1, host2: host2}
	f.cable1, f.cable2 = connect(tb, kind, f.host1, route1to2, f.host2, route2to1)
	f.plug1 = waitEvent(tb, f.host1, false)
	f.plug2 = waitEvent(tb, f.host2, false)
	return f
}

// waitEvent waits for a plug (or unplug) EVENT on th's control channel.
func waitEvent(tb testing.TB, th *testHost, unplug bool) *ctl.Event {
	tb.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-th.events:
			if ev, ok := p.(*ctl.Event); ok && ev.Unplug == unplug {
				return ev
			}
		case <-deadline:
			tb.Fatalf("no EVENT unplug=%v", unplug)
			return nil
		}
	}
}

// writePath programs one path entry of the host router over the control
// channel, as xdomain's path set-up does.
func writePath(tb testing.TB, th *testHost, in uint8, inHop int, out uint8, outHop int) {
	tb.Helper()
	fc := uint32(nhi.DMATxPathFC)
	if out == nhiAdapter {
		fc = nhi.DMARxPathFC
	}
	e := nhi.PathEntry(out, uint16(outHop), nhi.DMACredits, fc)
	require.NoError(tb, th.ctl.WriteConfig(context.Background(), 0, ctl.SpacePath, in, uint16(nhi.PathEntryWords*inHop), e[:]))
}

func clearPath(tb testing.TB, th *testHost, in uint8, inHop int) {
	tb.Helper()
	require.NoError(tb, th.ctl.WriteConfig(context.Background(), 0, ctl.SpacePath, in, uint16(nhi.PathEntryWords*inHop), []uint32{0, 0}))
}

// stream is a TX/RX ring pair as USB4STREAM sets it up.
type stream struct {
	tx, rx *nhi.Ring
	rxSig  chan struct{} // the RX ring's Notify: frames may be ready
}

// waitRx blocks until s's RX ring has a completed frame or ctx ends.
func (s *stream) waitRx(ctx context.Context) error {
	for s.rx.RxReady() == 0 {
		select {
		case <-s.rxSig:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

type streamOpts struct {
	size     int
	flags    nhi.RingFlag // added to RingFrame|RingE2E
	noRxPath bool
	noTxPath bool
	throttle uint32 // interrupt throttling in ns; tests use 0 for latency
}

// openStream allocates and starts the rings (RX primed first), then
// enables the paths: RX lane inHop → ring, TX ring → lane outHop.
func openStream(tb testing.TB, th *testHost, lane uint8, inHop, outHop int, o streamOpts) *stream {
	tb.Helper()
	if o.size == 0 {
		o.size = 256
	}
	flags := nhi.RingFrame | nhi.RingE2E | o.flags
	tx, err := th.nhi.AllocTxRing(nhi.RingConfig{Hop: -1, Size: o.size, Flags: flags})
	require.NoError(tb, err)
	rxSig := make(chan struct{}, 1)
	rx, err := th.nhi.AllocRxRing(nhi.RingConfig{Hop: -1, Size: o.size, Flags: flags, E2ETxHop: tx.Hop(),
		SOFMask: 1 << pdfFrameStart, EOFMask: 1<<pdfData | 1<<pdfClose,
		Notify: func() {
			select {
			case rxSig <- struct{}{}:
			default:
			}
		}})
	require.NoError(tb, err)
	require.NoError(tb, tx.SetThrottling(o.throttle))
	require.NoError(tb, rx.SetThrottling(o.throttle))
	require.NoError(tb, tx.Start())
	require.NoError(tb, rx.Start())
	if !o.noRxPath {
		writePath(tb, th, lane, inHop, nhiAdapter, rx.Hop())
	}
	if !o.noTxPath {
		writePath(tb, th, nhiAdapter, tx.Hop(), lane, outHop)
	}
	tb.Cleanup(func() { tx.Free(); rx.Free() })
	return &stream{tx: tx, rx: rx, rxSig: rxSig}
}

// readFrame waits for one frame, copies it out and releases its slot.
func readFrame(tb testing.TB, r *nhi.Ring, timeout time.Duration) (nhi.Frame, []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	require.NoError(tb, waitRx(ctx, r))
	f := r.RxFrames(nil)[0]
	data := append([]byte(nil), f.Data...)
	require.NoError(tb, r.RxRelease(1))
	return f, data
}

// waitRx polls r until a frame is ready or ctx ends (for rings without a
// Notify channel to wait on).
func waitRx(ctx context.Context, r *nhi.Ring) error {
	for r.RxReady() == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Microsecond):
		}
	}
	return nil
}

// pattern fills b with bytes derived from seed.
func pattern(b []byte, seed int) []byte {
	for i := range b {
		b[i] = byte(seed*131 + i*7 + i>>8)
	}
	return b
}
