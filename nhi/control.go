package nhi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"tbstream/nhi/ctl"
)

// Control channel constants (ctl.c).
const (
	ControlRing     = 0  // ring 0, TX and RX
	ControlRingSize = 10 // TB_CTL_RING_SIZE
	ControlRetries  = 4  // TB_CTL_RETRIES: config read/write attempts, seq = attempt
	// DefaultControlTimeout is the per-attempt timeout of a request.
	DefaultControlTimeout = time.Second
	controlAckTimeout     = 100 * time.Millisecond
)

// ErrTimeout is returned when a request got no matching response.
var ErrTimeout = errors.New("nhi: control request timed out")

// ConfigError is a router's ERROR reply to a request; match with
// errors.As.
type ConfigError struct {
	Route   ctl.Route
	Code    ctl.ErrorCode
	Adapter uint8
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("router %v adapter %d: %v", e.Route, e.Adapter, e.Code)
}

// ControlConfig tunes OpenControl.
type ControlConfig struct {
	// Timeout is the per-attempt request timeout; 0 means
	// DefaultControlTimeout.
	Timeout time.Duration
	// Handler receives every packet no request matched: hot-plug events
	// (already acknowledged), XDomain requests, late responses. It runs
	// on the channel's receive goroutine and must not block.
	Handler func(ctl.Packet)
	Logger  *slog.Logger
}

// ControlStats are the control channel's counters.
type ControlStats struct {
	Sent, Received, BadFrames, Unmatched, Timeouts uint64
}

// ControlChannel is the control channel on ring 0: raw 256-byte frames
// whose PDF is the packet type, with CRC-32C, and request/response
// matching (§3.4 of the reference).
type ControlChannel struct {
	tx, rx *Ring
	cfg    ControlConfig
	log    *slog.Logger
	rxSig  chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup

	txMu     sync.Mutex // serializes use of TX slots
	configMu sync.Mutex // one config READ or WRITE in flight

	// mu protects pending, in arrival order (first match wins).
	mu      sync.Mutex
	pending []*request

	sent, received, badFrames, unmatched, timeouts atomic.Uint64
}

// request is an outstanding request waiting for its response.
type request struct {
	match func(ctl.Type, ctl.Packet) bool
	resp  chan ctl.Packet
}

// OpenControl allocates and starts ring 0 in RAW mode (TX and RX, 10
// descriptors each, RX PDF masks 0xffff) and starts receiving.
func (n *NHI) OpenControl(cfg ControlConfig) (*ControlChannel, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultControlTimeout
	}
	c := &ControlChannel{cfg: cfg, log: cfg.Logger, rxSig: make(chan struct{}, 1), done: make(chan struct{})}
	if c.log == nil {
		c.log = n.log
	}
	var err error
	if c.tx, err = n.AllocTxRing(RingConfig{Hop: ControlRing, Size: ControlRingSize, Flags: RingNoSuspend}); err != nil {
		return nil, fmt.Errorf("open control channel: %w", err)
	}
	c.rx, err = n.AllocRxRing(RingConfig{Hop: ControlRing, Size: ControlRingSize, Flags: RingNoSuspend,
		SOFMask: 0xffff, EOFMask: 0xffff, Notify: c.signal})
	if err != nil {
		c.tx.Free()
		return nil, fmt.Errorf("open control channel: %w", err)
	}
	if err = c.tx.Start(); err == nil {
		err = c.rx.Start()
	}
	if err != nil {
		c.rx.Free()
		c.tx.Free()
		return nil, fmt.Errorf("open control channel: %w", err)
	}
	c.wg.Add(1)
	go c.receive()
	return c, nil
}

func (c *ControlChannel) signal() {
	select {
	case c.rxSig <- struct{}{}:
	default:
	}
}

// Close stops ring 0 and fails outstanding requests.
func (c *ControlChannel) Close() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	close(c.done)
	c.wg.Wait()
	c.tx.Free()
	c.rx.Free()
	return nil
}

// Stats returns the channel's counters.
func (c *ControlChannel) Stats() ControlStats {
	return ControlStats{Sent: c.sent.Load(), Received: c.received.Load(), BadFrames: c.badFrames.Load(),
		Unmatched: c.unmatched.Load(), Timeouts: c.timeouts.Load()}
}

// SendFrame posts one raw frame (CRC included) with PDF t, waiting for a
// free TX slot.
func (c *ControlChannel) SendFrame(ctx context.Context, t ctl.Type, frame []byte) error {
	if len(frame) < 4 || len(frame) > FrameSize {
		return fmt.Errorf("control send %v: %d bytes: %w", t, len(frame), ErrInvalid)
	}
	c.txMu.Lock()
	defer c.txMu.Unlock()
	if _, err := c.tx.Write(ctx, frame, uint8(t), uint8(t)); err != nil {
		return fmt.Errorf("control send %v: %w", t, err)
	}
	c.sent.Add(1)
	return nil
}

// Send encodes and sends p without waiting for a response.
func (c *ControlChannel) Send(ctx context.Context, p ctl.Packet) error {
	frame, err := ctl.Encode(p)
	if err != nil {
		return fmt.Errorf("control send %v: %w", p.Type(), err)
	}
	return c.SendFrame(ctx, p.Type(), frame)
}

// Request sends req and waits up to the channel timeout for the first
// packet of type resp from req's route that match (if set) accepts. An
// ERROR from that route also answers it, as a *ConfigError. There is no
// retry: XDomain has its own policy.
func (c *ControlChannel) Request(ctx context.Context, req ctl.Packet, resp ctl.Type, match func(ctl.Packet) bool) (ctl.Packet, error) {
	route := req.PacketHeader().Route
	return c.request(ctx, req, func(t ctl.Type, p ctl.Packet) bool {
		return p.PacketHeader().Route == route && (t == ctl.TypeError ||
			t == resp && (match == nil || match(p)))
	})
}

func (c *ControlChannel) request(ctx context.Context, req ctl.Packet, match func(ctl.Type, ctl.Packet) bool) (ctl.Packet, error) {
	r := &request{match: match, resp: make(chan ctl.Packet, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, r)
	c.mu.Unlock()
	defer c.forget(r)

	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if err := c.Send(ctx, req); err != nil {
		return nil, err
	}
	select {
	case p := <-r.resp:
		if e, ok := p.(*ctl.ConfigError); ok {
			return p, &ConfigError{Route: e.Route, Code: e.Code, Adapter: e.Adapter}
		}
		return p, nil
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			c.timeouts.Add(1)
			return nil, fmt.Errorf("control %v to route %v: %w", req.Type(), req.PacketHeader().Route, ErrTimeout)
		}
		return nil, ctx.Err()
	case <-c.done:
		return nil, ErrClosed
	}
}

func (c *ControlChannel) forget(r *request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, o := range c.pending {
		if o == r {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			return
		}
	}
}

// ReadConfig reads length dwords (1..60) of a router config space,
// retrying on timeout up to ControlRetries times with seq = attempt.
func (c *ControlChannel) ReadConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, length int) ([]uint32, error) {
	if length < 1 || length > ctl.MaxConfigWords {
		return nil, fmt.Errorf("config read of %d dwords: %w", length, ErrInvalid)
	}
	p, err := c.configRequest(ctx, ctl.TypeRead, route, ctl.Address{Offset: offset, Length: uint8(length), Adapter: adapter, Space: space}, nil)
	if err != nil {
		return nil, err
	}
	return p.(*ctl.ConfigRead).Data, nil
}

// WriteConfig writes data (1..60 dwords) to a router config space, with
// ReadConfig's retries.
func (c *ControlChannel) WriteConfig(ctx context.Context, route ctl.Route, space ctl.ConfigSpace, adapter uint8, offset uint16, data []uint32) error {
	if len(data) < 1 || len(data) > ctl.MaxConfigWords {
		return fmt.Errorf("config write of %d dwords: %w", len(data), ErrInvalid)
	}
	_, err := c.configRequest(ctx, ctl.TypeWrite, route, ctl.Address{Offset: offset, Length: uint8(len(data)), Adapter: adapter, Space: space}, data)
	return err
}

func (c *ControlChannel) configRequest(ctx context.Context, t ctl.Type, route ctl.Route, addr ctl.Address, data []uint32) (ctl.Packet, error) {
	// A reply names the responder's upstream adapter, not the one asked
	// about, so two outstanding requests that differ only in the adapter
	// could take each other's replies. Linux serializes config access
	// under the domain lock; so do we.
	c.configMu.Lock()
	defer c.configMu.Unlock()
	var (
		p   ctl.Packet
		err error
	)
	for attempt := range ControlRetries {
		addr.Seq = uint8(attempt % 4)
		var req ctl.Packet = &ctl.ConfigRead{Header: ctl.Header{Route: route}, Addr: addr}
		if t == ctl.TypeWrite {
			req = &ctl.ConfigWrite{Header: ctl.Header{Route: route}, Addr: addr, Data: data}
		}
		want := addr
		p, err = c.request(ctx, req, func(_ ctl.Type, resp ctl.Packet) bool {
			if resp.PacketHeader().Route != route {
				return false
			}
			switch p := resp.(type) {
			case *ctl.ConfigError:
				return true
			case *ctl.ConfigRead:
				return t == ctl.TypeRead && sameAddress(p.Addr, want) && len(p.Data) == int(want.Length)
			case *ctl.ConfigWrite:
				return t == ctl.TypeWrite && sameAddress(p.Addr, want) && p.Data == nil
			}
			return false
		})
		if !errors.Is(err, ErrTimeout) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("config %v %v adapter %d offset %d: %w", t, addr.Space, addr.Adapter, addr.Offset, err)
	}
	return p, nil
}

// sameAddress is check_config_address: space, offset, length and seq
// must echo the request (the adapter field names the responder's
// upstream adapter).
func sameAddress(got, want ctl.Address) bool {
	return got.Space == want.Space && got.Offset == want.Offset && got.Length == want.Length && got.Seq == want.Seq
}

// receive drains RX ring 0: each frame is checked (length, CRC), decoded
// by its PDF, matched against outstanding requests, else handed to the
// Handler. The slots go back to the NHI at once.
func (c *ControlChannel) receive() {
	defer c.wg.Done()
	var frames []Frame
	for {
		select {
		case <-c.rxSig:
		case <-c.done:
			return
		}
		for {
			frames = c.rx.RxFrames(frames[:0])
			if len(frames) == 0 {
				break
			}
			for _, f := range frames {
				c.handle(f)
			}
			if c.rx.RxRelease(len(frames)) != nil {
				return
			}
		}
	}
}

func (c *ControlChannel) handle(f Frame) {
	t := ctl.Type(f.EOF)
	p, err := ctl.Decode(t, f.Data)
	if err != nil {
		c.badFrames.Add(1)
		c.log.Debug("control frame dropped", "pdf", t, "size", len(f.Data), "err", err)
		return
	}
	c.received.Add(1)
	c.mu.Lock()
	for i, r := range c.pending {
		if r.match(t, p) {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			c.mu.Unlock()
			r.resp <- p
			return
		}
	}
	c.mu.Unlock()
	if ev, ok := p.(*ctl.Event); ok {
		c.ackPlug(ev)
	}
	c.unmatched.Add(1)
	if c.cfg.Handler != nil {
		c.cfg.Handler(p)
	}
}

// ackPlug acknowledges a hot-plug EVENT (tb_cfg_ack_plug): an ERROR packet
// with code ACK_PLUG_EVENT and pg = plug or unplug.
func (c *ControlChannel) ackPlug(ev *ctl.Event) {
	pg := ctl.PGHotPlug
	if ev.Unplug {
		pg = ctl.PGHotUnplug
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlAckTimeout)
	defer cancel()
	ack := &ctl.ConfigError{Header: ctl.Header{Route: ev.Route}, Code: ctl.ErrorAckPlugEvent, Adapter: ev.Adapter, PG: pg}
	if err := c.Send(ctx, ack); err != nil {
		c.log.Debug("plug event ack failed", "route", ev.Route, "err", err)
	}
}
