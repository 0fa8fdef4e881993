package host

import (
	"context"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/cmd/internal/stream"
	"tbstream/cuse"
	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
	"tbstream/xdomain"
)

// The order in which a stream's first open and last close start and stop
// its rings and enable and disable its DMA paths, against Linux's
// tbstream_dev_start/tbstream_dev_stop (stream.c, 7.2). xdomain's
// sequence_test.go holds the register sequences within each step.
//
//	Linux                              tbstream
//	tb_xdomain_enable_paths (RX, TX)   tb_ring_start TX
//	tb_ring_start TX                   tb_ring_start RX, RX primed
//	tb_ring_start RX                   DMA paths enabled (RX, TX)
//	RX buffers posted (tb_ring_rx)
//	…                                  …
//	tb_ring_stop TX, tb_ring_stop RX   tb_ring_stop TX, tb_ring_stop RX
//	tb_xdomain_disable_paths           the same
//
// The start differs on purpose: with the paths first, frames the peer
// sends at once find an RX ring with no buffer (thunderbolt-net primes RX
// before the paths for that reason). The stop is Linux's order when no
// peer session answers (here: host2 never opens): RX stays up while the
// close waits for TX, so that what the peer sends for the ending session
// is taken and discarded rather than left to reach its next one. When the
// peer's CLOSE comes (streamOrderAnswered), the RX path goes down at once
// after it, so that what the peer sends next waits for our next session.
var streamOrder = []string{
	"tx ring started", "rx ring started", "rx ring primed",
	"DMA RX path enabled", "DMA TX path enabled",
	"tx ring stopped", "rx ring stopped",
	"DMA RX path disabled", "DMA TX path disabled",
}

var streamOrderAnswered = []string{
	"tx ring started", "rx ring started", "rx ring primed",
	"DMA RX path enabled", "DMA TX path enabled",
	"DMA RX path disabled", "tx ring stopped", "rx ring stopped",
	"DMA TX path disabled",
}

// timeline names, in order, the steps of the stream's rings (hop ≥ 1; ring
// 0 is the control channel) and paths as the device and the control
// channel see them.
type timeline struct {
	mu      sync.Mutex
	events  []string
	primed  bool
	nhiAdpt uint8
}

func (tl *timeline) add(ev string) {
	if n := len(tl.events); n > 0 && tl.events[n-1] == ev {
		return // the E2E rewrite of options, the second write of a path take-down
	}
	tl.events = append(tl.events, ev)
}

func (tl *timeline) take() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	ev := tl.events
	tl.events = nil
	return ev
}

type orderDevice struct {
	nhi.Device
	tl   *timeline
	hops int
}

func (d *orderDevice) Write32(off nhi.Reg, v uint32) {
	d.tl.mu.Lock()
	for hop := 1; hop < d.hops; hop++ {
		switch off {
		case nhi.TxOptionsReg(hop, 0):
			if v&nhi.RingFlagEnable != 0 {
				d.tl.add("tx ring started")
			} else {
				d.tl.add("tx ring stopped")
			}
		case nhi.RxOptionsReg(hop, 0):
			if v&nhi.RingFlagEnable != 0 {
				d.tl.add("rx ring started")
				d.tl.primed = false
			} else {
				d.tl.add("rx ring stopped")
			}
		case nhi.RxRingReg(hop, nhi.RingIndices):
			if v != 0 && !d.tl.primed {
				d.tl.add("rx ring primed")
				d.tl.primed = true
			}
		}
	}
	d.tl.mu.Unlock()
	d.Device.Write32(off, v)
}

type orderConfig struct {
	xdomain.ConfigAccess
	tl *timeline
}

func (c *orderConfig) WriteConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, data []uint32) error {
	if space == ctl.SpacePath && len(data) > 0 {
		path := "DMA RX path"
		if adapter == c.tl.nhiAdpt {
			path = "DMA TX path"
		}
		state := " disabled"
		if data[0]&nhi.PathCS0Valid != 0 {
			state = " enabled"
		}
		c.tl.mu.Lock()
		c.tl.add(path + state)
		c.tl.mu.Unlock()
	}
	return c.ConfigAccess.WriteConfig(ctx, route, space, adapter, offset, data)
}

// startOrderedHost is Start with the device and the stream service's
// control channel recorded into one timeline.
func startOrderedHost(t *testing.T, name string) (*testHost, *timeline) {
	e, err := emu.NewHost(emu.Config{Name: name, Logger: testLogger()})
	require.NoError(t, err)
	tl := &timeline{nhiAdpt: 5} // the emulated router's NHI adapter
	dev := &orderDevice{Device: e, tl: tl, hops: int(e.Read32(nhi.RegCaps) & nhi.CapsHopCountMask)}
	n := &nodes{dev: map[string]cuse.Device{}}
	cfg := Config{Name: name, Device: dev, Devices: n, Timing: fast, Logger: testLogger()}
	h := &Host{cfg: cfg, log: cfg.Logger, packets: make(chan ctl.Packet, 256)}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.NHI, err = nhi.Probe(dev, nhi.Options{Logger: cfg.Logger})
	require.NoError(t, err)
	h.Control, err = h.NHI.OpenControl(nhi.ControlConfig{Logger: cfg.Logger, Handler: h.queue})
	require.NoError(t, err)
	uuid, err := h.routerUUID()
	require.NoError(t, err)
	h.XDomain = xdomain.NewHost(xdomain.HostConfig{UUID: uuid, Name: name, Timing: fast, Logger: cfg.Logger}, h.Control)
	h.Streams, err = stream.New(stream.Config{
		Host: h.XDomain, Data: stream.DataPath{NHI: h.NHI, Control: &orderConfig{ConfigAccess: h.Control, tl: tl}}, Devices: n, Logger: cfg.Logger,
	})
	require.NoError(t, err)
	h.wg.Add(1)
	go h.dispatch()
	t.Cleanup(func() {
		h.Close()
		e.Close()
	})
	return &testHost{Host: h, emu: e, nodes: n}, tl
}

func TestStreamStartAndStopOrder(t *testing.T) {
	h1, tl := startOrderedHost(t, "host1")
	h2 := startHost(t, "host2")
	connect(t, h1, h2)
	i1, _ := pairStream(t, h1, h2, "s")
	tl.take()

	hd := open(t, h1, node(t, i1), syscall.O_RDWR)
	hd.Release(context.Background())
	require.Equal(t, streamOrder, tl.take())
}

// With host2's session open, host1's close waits for host2's answer, and
// takes its RX path down as soon as it has it.
func TestStreamStopOrderWhenAnswered(t *testing.T) {
	h1, tl := startOrderedHost(t, "host1")
	h2 := startHost(t, "host2")
	connect(t, h1, h2)
	i1, i2 := pairStream(t, h1, h2, "s")
	r := open(t, h2, node(t, i2), syscall.O_RDONLY)
	tl.take()

	hd := open(t, h1, node(t, i1), syscall.O_RDWR)
	hd.Release(context.Background())
	require.Equal(t, streamOrderAnswered, tl.take())
	require.Empty(t, readAll(t, r), "host2's reader: EOF")
	r.Release(context.Background())
}
