// Package host assembles one tbstream host: the NHI driver over a Device
// (emulated or VFIO), the control channel, the connection-manager duties a
// host needs for XDomain links (hot-plug events, the lane adapter's HopID
// limit, the router UUID), XDomain discovery, and the USB4STREAM service.
//
// It does not mount anything: the daemon puts configfs and the devices on
// top, tests drive the service directly.
package host

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"tbstream/cmd/internal/stream"
	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/xdomain"
	"tbstream/xdomain/xdp"
)

// Config describes a host.
type Config struct {
	// Name is published to peers as deviceid text (Linux: the node name).
	Name   string
	Device nhi.Device
	// Domain is the domain number in names ("0" of "0-1.0").
	Domain  uint32
	Devices stream.Devices
	// Timing of discovery; zero values are the kernel's.
	Timing xdomain.Timing
	Logger *slog.Logger
}

// Host is one running host.
type Host struct {
	NHI     *nhi.NHI
	Control *nhi.ControlChannel
	XDomain *xdomain.Host
	Streams *stream.Service

	cfg Config
	log *slog.Logger

	packets chan ctl.Packet // unsolicited control packets, in order
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// controlTimeout bounds one config read or write of the host router.
const controlTimeout = 2 * time.Second

// Start probes the NHI, opens the control channel, learns the router UUID
// and starts XDomain discovery and the stream service.
func Start(cfg Config) (*Host, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Host{cfg: cfg, log: cfg.Logger, packets: make(chan ctl.Packet, 256)}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	n, err := nhi.Probe(cfg.Device, nhi.Options{Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("probe nhi: %w", err)
	}
	h.NHI = n
	h.Control, err = n.OpenControl(nhi.ControlConfig{Logger: cfg.Logger, Handler: h.queue})
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("open control channel: %w", err)
	}
	uuid, err := h.routerUUID()
	if err != nil {
		h.Control.Close()
		n.Close()
		return nil, err
	}
	h.XDomain = xdomain.NewHost(xdomain.HostConfig{
		UUID: uuid, Name: cfg.Name, Domain: cfg.Domain, Timing: cfg.Timing, Logger: cfg.Logger,
	}, h.Control)
	h.Streams, err = stream.New(stream.Config{
		Host:    h.XDomain,
		Data:    stream.DataPath{NHI: n, Control: h.Control},
		Devices: cfg.Devices,
		Logger:  cfg.Logger,
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	h.wg.Add(1)
	go h.dispatch()
	return h, nil
}

// routerUUID derives the host router's UUID from its UID (ROUTER_CS_7..8)
// the way Linux's software connection manager does for routers without
// one of their own: UID low, UID high, 0x80000000, 0xffffffff.
func (h *Host) routerUUID() (xdp.UUID, error) {
	ctx, cancel := context.WithTimeout(h.ctx, controlTimeout)
	defer cancel()
	w, err := h.Control.ReadConfig(ctx, 0, ctl.SpaceRouter, 0, nhi.RouterCS7, 2)
	if err != nil {
		return xdp.UUID{}, fmt.Errorf("read router uid: %w", err)
	}
	return xdp.UUIDFromWords([]uint32{w[0], w[1], 0x80000000, 0xffffffff}), nil
}

// queue takes unsolicited packets from the control channel's receive
// goroutine, which must not block.
func (h *Host) queue(p ctl.Packet) {
	select {
	case h.packets <- p:
	default:
		h.log.Warn("control packet dropped: dispatch queue full", "type", p.Type())
	}
}

func (h *Host) dispatch() {
	defer h.wg.Done()
	for {
		select {
		case <-h.ctx.Done():
			return
		case p := <-h.packets:
			switch p := p.(type) {
			case *ctl.Event:
				h.hotplug(p)
			case *ctl.Raw:
				if p.Kind == ctl.TypeXDomainRequest || p.Kind == ctl.TypeXDomainResponse {
					h.XDomain.HandlePacket(p)
				}
			}
		}
	}
}

// hotplug turns a router's plug event into an XDomain: the event comes
// from the router one level above the peer, naming its adapter.
func (h *Host) hotplug(ev *ctl.Event) {
	depth := ev.Route.Depth()
	if depth >= ctl.MaxRouteDepth {
		return
	}
	route := ev.Route | ctl.Route(ev.Adapter)<<(ctl.RouteShift*depth)
	if ev.Unplug {
		h.log.Info("peer unplugged", "route", route)
		h.XDomain.Disconnect(route)
		return
	}
	max, err := h.laneMaxHopID(route)
	if err != nil {
		h.log.Error("cannot read the lane adapter toward a new peer", "route", route, "err", err)
		return
	}
	h.log.Info("peer plugged", "route", route, "max_in_hopid", max)
	if _, err := h.XDomain.Connect(route, max); err != nil {
		h.log.Error("cannot start discovery", "route", route, "err", err)
	}
}

// laneMaxHopID reads ADP_CS_5.Max Input HopID of the host router's lane
// adapter toward route (its first hop).
func (h *Host) laneMaxHopID(route ctl.Route) (int, error) {
	ctx, cancel := context.WithTimeout(h.ctx, controlTimeout)
	defer cancel()
	w, err := h.Control.ReadConfig(ctx, 0, ctl.SpaceAdapter, uint8(route&0xff), nhi.AdpCS5, 1)
	if err != nil {
		return 0, err
	}
	return int(w[0] & nhi.AdpCS5MaxInHopIDMask), nil
}

// Close stops the stream service, disconnects every peer and closes the
// driver. The Device stays open; its owner closes it.
func (h *Host) Close() error {
	if h.Streams != nil {
		h.Streams.Shutdown()
	}
	h.cancel()
	h.wg.Wait()
	if h.XDomain != nil {
		h.XDomain.Close()
	}
	if h.Control != nil {
		h.Control.Close()
	}
	return h.NHI.Close()
}
