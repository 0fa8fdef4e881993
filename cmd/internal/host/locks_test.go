package host

// Liveness of the stream service: no lock is held across a wait (for the
// peer, for path set-up on the control channel, for a waker), a handle
// kept open across a re-plug fails cleanly, and data a close cannot send
// is counted.

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cmd/internal/stream"
	"tbstream/configfs"
	"tbstream/cuse"
	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
	"tbstream/xdomain"
)

// hangGuard is how long a test lets an operation that must not wait run
// before it calls it stuck; it only catches hangs.
const hangGuard = 30 * time.Second

// gate stands between the stream service and the control channel. Shut,
// it holds every config access until it is opened again or the access's
// own context ends (path set-up's timeout), which it records: a test can
// then tell "finished while set-up was held" from "finished because set-up
// gave up".
type gate struct {
	inner xdomain.ConfigAccess

	mu      sync.Mutex
	hold    chan struct{} // nil while open
	entered chan struct{} // closed by the first access held
	expired chan struct{} // closed when a held access timed out
	onceIn  *sync.Once
	onceExp *sync.Once
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = make(chan struct{})
	g.entered, g.expired = make(chan struct{}), make(chan struct{})
	g.onceIn, g.onceExp = new(sync.Once), new(sync.Once)
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold != nil {
		close(g.hold)
		g.hold = nil
	}
}

func (g *gate) pass(ctx context.Context) error {
	g.mu.Lock()
	hold, entered, expired, onceIn, onceExp := g.hold, g.entered, g.expired, g.onceIn, g.onceExp
	g.mu.Unlock()
	if hold == nil {
		return nil
	}
	onceIn.Do(func() { close(entered) })
	select {
	case <-hold:
		return nil
	case <-ctx.Done():
		onceExp.Do(func() { close(expired) })
		return ctx.Err()
	}
}

func (g *gate) ReadConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, length int) ([]uint32, error) {
	if err := g.pass(ctx); err != nil {
		return nil, err
	}
	return g.inner.ReadConfig(ctx, route, space, adapter, offset, length)
}

func (g *gate) WriteConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, data []uint32) error {
	if err := g.pass(ctx); err != nil {
		return err
	}
	return g.inner.WriteConfig(ctx, route, space, adapter, offset, data)
}

// startGatedHost is startHost with the stream service's control channel
// (DMA path set-up) behind a gate; discovery uses the channel directly.
// It is Start with that one change.
func startGatedHost(t *testing.T, name string) (*testHost, *gate) {
	e, err := emu.NewHost(emu.Config{Name: name, Logger: testLogger()})
	require.NoError(t, err)
	n := &nodes{dev: map[string]cuse.Device{}}
	cfg := Config{Name: name, Device: e, Devices: n, Timing: fast, Logger: testLogger()}
	h := &Host{cfg: cfg, log: cfg.Logger, packets: make(chan ctl.Packet, 256)}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.NHI, err = nhi.Probe(e, nhi.Options{Logger: cfg.Logger})
	require.NoError(t, err)
	h.Control, err = h.NHI.OpenControl(nhi.ControlConfig{Logger: cfg.Logger, Handler: h.queue})
	require.NoError(t, err)
	uuid, err := h.routerUUID()
	require.NoError(t, err)
	h.XDomain = xdomain.NewHost(xdomain.HostConfig{UUID: uuid, Name: name, Timing: fast, Logger: cfg.Logger}, h.Control)
	g := &gate{inner: h.Control}
	h.Streams, err = stream.New(stream.Config{
		Host: h.XDomain, Data: stream.DataPath{NHI: h.NHI, Control: g}, Devices: n, Logger: cfg.Logger,
	})
	require.NoError(t, err)
	h.wg.Add(1)
	go h.dispatch()
	t.Cleanup(func() {
		g.open()
		h.Close()
		e.Close()
	})
	return &testHost{Host: h, emu: e, nodes: n}, g
}

// connect plugs host1 and host2 together as twoHosts does and waits for
// both services.
func connect(t *testing.T, h1, h2 *testHost) (unplug func()) {
	c1, _, err := emu.ConnectInProcess(h1.emu, emu.Port{Adapter: 3, PeerRoute: 0x503}, h2.emu, emu.Port{Adapter: 1, PeerRoute: 0x1})
	require.NoError(t, err)
	t.Cleanup(func() { c1.Close() })
	waitService(t, h2, 0x1)
	waitService(t, h1, 0x503)
	return func() { c1.Close() }
}

func infoOf(t *testing.T, h *testHost, group, name string) stream.Info {
	t.Helper()
	for _, g := range h.Streams.Snapshot() {
		if g.Name != group {
			continue
		}
		for _, s := range g.Streams {
			if s.Name == name {
				return s
			}
		}
	}
	t.Fatalf("no stream %s/%s", group, name)
	return stream.Info{}
}

// done runs f on a goroutine and returns a channel closed when it has
// returned.
func done(f func()) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		f()
	}()
	return ch
}

// TestCloseWhileOpenWaitsForPeer: a blocking open waiting for a peer that
// is gone must not hold up the close(2) of another handle of the stream
// (it held the lock Release needs).
func TestCloseWhileOpenWaitsForPeer(t *testing.T) {
	h1, h2, unplug := twoHosts(t)
	_, i2 := pairStream(t, h1, h2, "s")
	old := open(t, h2, node(t, i2), syscall.O_RDWR)
	dev := h2.nodes.get(node(t, i2))
	unplug()
	require.Eventually(t, func() bool { return infoOf(t, h2, "0-1.0", "s").State == "detached" },
		10*time.Second, 5*time.Millisecond)

	octx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened := make(chan error, 1)
	go func() {
		_, err := dev.Open(octx, &cuse.OpenRequest{Flags: syscall.O_RDWR, Wake: func() {}})
		opened <- err
	}()
	require.Eventually(t, func() bool { return infoOf(t, h2, "0-1.0", "s").Waiting == 1 },
		10*time.Second, 5*time.Millisecond, "the open waits for the peer")

	select {
	case <-done(func() { old.Release(context.Background()) }):
	case <-time.After(hangGuard):
		t.Fatal("close(2) waited for another handle's open")
	}
	select {
	case err := <-opened:
		t.Fatalf("the open returned %v without a peer", err)
	default:
	}
	cancel()
	require.ErrorIs(t, <-opened, context.Canceled)
	require.Zero(t, infoOf(t, h2, "0-1.0", "s").Users)
}

// TestInfoWhilePathSetUpHangs: while an open's path set-up waits on a
// control channel that does not answer, attribute reads, Info and the
// detach of an unplug go on; the open then fails cleanly and leaves
// nothing behind.
func TestInfoWhilePathSetUpHangs(t *testing.T) {
	h1, g := startGatedHost(t, "host1")
	h2 := startHost(t, "host2")
	unplug := connect(t, h1, h2)
	i1, _ := pairStream(t, h1, h2, "s")
	in := show(t, i1, configfs.AttrInHopID)

	g.shut()
	opened := make(chan error, 1)
	go func() {
		d := h1.nodes.get(node(t, i1))
		_, err := d.Open(context.Background(), &cuse.OpenRequest{Flags: syscall.O_RDWR | syscall.O_NONBLOCK, Wake: func() {}})
		opened <- err
	}()
	select {
	case <-g.entered:
	case <-time.After(hangGuard):
		t.Fatal("the open did not set up paths")
	}

	// mustNotWait fails when f returns only once the held set-up gave up.
	mustNotWait := func(what string, f func()) {
		t.Helper()
		select {
		case <-done(f):
		case <-time.After(hangGuard):
			t.Fatalf("%s hangs", what)
		}
		select {
		case <-g.expired:
			t.Fatalf("%s waited for the path set-up to time out", what)
		default:
		}
	}
	mustNotWait("reading in_hopid", func() { require.Equal(t, in, show(t, i1, configfs.AttrInHopID)) })
	mustNotWait("Info", func() { require.Equal(t, 1, infoOf(t, h1, "0-503.0", "s").Users, "the opener counts as a user") })
	mustNotWait("writing ring_size", func() {
		require.ErrorIs(t, i1.Store(context.Background(), configfs.AttrRingSize, 64), syscall.EBUSY, "starting is open")
	})
	unplug()
	mustNotWait("detach", func() {
		for infoOf(t, h1, "0-503.0", "s").State != "detached" {
			select {
			case <-g.expired:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})

	g.open()
	require.ErrorIs(t, <-opened, syscall.ENXIO, "the stream detached during the set-up")
	require.Eventually(t, func() bool {
		s := infoOf(t, h1, "0-503.0", "s")
		return s.Users == 0 && s.State == "detached"
	}, 10*time.Second, 5*time.Millisecond, "the rings and paths of the abandoned start are gone")
	require.NoError(t, i1.Store(context.Background(), configfs.AttrRingSize, 64))
}

// TestStaleHandleAfterReplug: a handle kept open across unplug and
// re-plug fails with ENXIO for good (its rings' paths were for the old
// HopIDs); new opens get fresh rings and paths and carry data, while the
// stale handles are still open and after they close.
func TestStaleHandleAfterReplug(t *testing.T) {
	h1, h2, unplug := twoHosts(t)
	i1, i2 := pairStream(t, h1, h2, "s")
	old1 := open(t, h1, node(t, i1), syscall.O_RDWR)
	old2 := open(t, h2, node(t, i2), syscall.O_RDWR)
	unplug()
	require.Eventually(t, func() bool {
		return show(t, i1, configfs.AttrOutHopID) == 0 && show(t, i2, configfs.AttrInHopID) == -1
	}, 10*time.Second, 5*time.Millisecond, "detached on both sides")
	c, _, err := emu.ConnectInProcess(h1.emu, emu.Port{Adapter: 3, PeerRoute: 0x503}, h2.emu, emu.Port{Adapter: 1, PeerRoute: 0x1})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.Eventually(t, func() bool {
		return show(t, i2, configfs.AttrInHopID) >= 8 && show(t, i1, configfs.AttrInHopID) >= 8
	}, 10*time.Second, 5*time.Millisecond, "re-attached")

	ctx := context.Background()
	for _, old := range []cuse.Handle{old1, old2} {
		_, err := old.Write(ctx, &cuse.WriteRequest{Data: [][]byte{[]byte("x")}})
		require.ErrorIs(t, err, syscall.ENXIO, "write on a handle from before the re-plug")
		_, err = old.Read(ctx, &cuse.ReadRequest{Size: 10, Flags: syscall.O_NONBLOCK})
		require.ErrorIs(t, err, syscall.ENXIO, "read on a handle from before the re-plug")
		ev, err := old.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn | cuse.EventOut})
		require.NoError(t, err)
		require.Equal(t, cuse.EventHup|cuse.EventErr, ev)
	}
	sendOnce(t, h1, i1, h2, i2, "fresh rings beside stale ones")
	old1.Release(ctx)
	old2.Release(ctx)
	sendOnce(t, h1, i1, h2, i2, "after the stale handles closed")
}

// TestUndeliveredCounted: bytes written with no reader on the peer, or
// to a peer that went away, are counted at close; delivered ones are not.
func TestUndeliveredCounted(t *testing.T) {
	h1, h2, unplug := twoHosts(t)
	ctx := context.Background()
	i1, i2 := pairStream(t, h1, h2, "s")

	sendOnce(t, h1, i1, h2, i2, "read")
	require.Zero(t, infoOf(t, h1, "0-503.0", "s").Undelivered)

	// Nobody has host2's device open: no credits, nothing leaves.
	w := open(t, h1, node(t, i1), syscall.O_WRONLY)
	data := make([]byte, 100_000)
	fill(data, 5)
	writeAll(t, w, data)
	w.Release(ctx)
	s := infoOf(t, h1, "0-503.0", "s")
	require.Equal(t, uint64(len(data)), s.Undelivered)
	require.Equal(t, uint64(len(data)+len("read")), s.TxBytes)

	// The peer goes away with data queued.
	w = open(t, h1, node(t, i1), syscall.O_WRONLY)
	writeAll(t, w, data[:5000])
	unplug()
	require.Eventually(t, func() bool { return infoOf(t, h1, "0-503.0", "s").State == "detached" },
		10*time.Second, 5*time.Millisecond)
	w.Release(ctx)
	require.Equal(t, uint64(len(data)+5000), infoOf(t, h1, "0-503.0", "s").Undelivered)
}
