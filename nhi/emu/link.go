package emu

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
)

// socketBuffer is the write buffer of a socket cable; the engine flushes it
// after every pass, so frames are batched the way a pass batches them.
const socketBuffer = 256 << 10

// socketKernelBuffer is what the kernel is asked to buffer each way (it
// may give less, up to its rmem/wmem limits).
const socketKernelBuffer = 4 << 20

// lane is one lane adapter: the cable plugged into it and the E2E credits
// the peer granted per output HopID.
type lane struct {
	adapter uint8
	cable   atomic.Pointer[Cable]
	credits [laneMaxHopID + 1]atomic.Int32
	// starved: a frame waits for credits on this lane, so arriving
	// credits must wake the engine (otherwise they need not).
	starved atomic.Bool
}

func (h *Host) lane(adapter uint8) *lane { return h.lanes[adapter-firstLaneAdapter] }

func (l *lane) clearCredits() {
	for i := range l.credits {
		l.credits[i].Store(0)
	}
}

func (h *Host) creditArrived(l *lane, hopID uint16, n int32) {
	if hopID <= laneMaxHopID {
		l.credits[hopID].Add(n)
		if l.starved.Swap(false) {
			h.kick()
		}
	}
}

func (h *Host) creditReset(l *lane, hopID uint16) {
	if hopID <= laneMaxHopID {
		l.credits[hopID].Store(0)
	}
}

// Port says where a cable plugs into a host and where the peer appears.
type Port struct {
	// Adapter is the lane adapter, 1..4; 0 means 1.
	Adapter uint8
	// PeerRoute is the route string at which the peer host appears to
	// this host; its first hop must be Adapter. 0 means route Adapter, so
	// {Adapter: 3, PeerRoute: 0x503} reproduces the docs' "0-503".
	PeerRoute ctl.Route
}

func (p Port) normalize() (Port, error) {
	if p.Adapter == 0 {
		p.Adapter = firstLaneAdapter
	}
	if !isLane(p.Adapter) {
		return p, fmt.Errorf("emu port: adapter %d is not a lane adapter (%d..%d)", p.Adapter, firstLaneAdapter, firstLaneAdapter+laneAdapters-1)
	}
	if p.PeerRoute == 0 {
		p.PeerRoute = ctl.Route(p.Adapter)
	}
	if !p.PeerRoute.Valid() || uint8(p.PeerRoute&0xff) != p.Adapter {
		return p, fmt.Errorf("emu port: peer route %v does not start at adapter %d", p.PeerRoute, p.Adapter)
	}
	for r := p.PeerRoute; r != 0; r >>= ctl.RouteShift {
		if r&0xff == 0 || r&0xff > 0x3f {
			return p, fmt.Errorf("emu port: peer route %v has an invalid adapter hop", p.PeerRoute)
		}
	}
	return p, nil
}

// cableEnd is how a host's engine reaches the other end of a cable.
type cableEnd interface {
	sendData(hopID uint16, sof, eof uint8, p []byte)
	sendControl(pdf uint8, frame []byte)
	sendCredit(hopID uint16, n int32)
	sendCreditReset(hopID uint16)
	flush()
	close()
}

// Cable is one host's end of an emulated cable. Closing either end
// unplugs both: each host gets a hot-unplug EVENT on ring 0.
type Cable struct {
	host *Host
	lane *lane
	port Port
	end  cableEnd
	done chan struct{}
	gone atomic.Bool
}

// Port returns where the cable is plugged and the route of the peer.
func (c *Cable) Port() Port { return c.port }

// Done is closed once the cable is unplugged.
func (c *Cable) Done() <-chan struct{} { return c.done }

// Close unplugs the cable.
func (c *Cable) Close() error {
	c.unplug()
	return nil
}

func (c *Cable) unplug() {
	if !c.gone.CompareAndSwap(false, true) {
		return
	}
	h := c.host
	c.lane.cable.CompareAndSwap(c, nil)
	c.lane.clearCredits()
	h.regrant() // withdraws what RX rings granted through this cable
	h.router.plugEvent(c.port.PeerRoute, true)
	c.end.close()
	close(c.done)
	h.log.Info("emu: cable unplugged", "adapter", c.port.Adapter, "peer", c.port.PeerRoute.String())
}

func (h *Host) newCable(port Port, end cableEnd) *Cable {
	return &Cable{host: h, lane: h.lane(port.Adapter), port: port, end: end, done: make(chan struct{})}
}

// attach plugs c into its lane adapter; from then on the engine uses it.
func (h *Host) attach(c *Cable) error {
	select {
	case <-h.done:
		return nhi.ErrClosed
	default:
	}
	if !c.lane.cable.CompareAndSwap(nil, c) {
		return fmt.Errorf("emu: lane adapter %d already has a cable", c.port.Adapter)
	}
	c.lane.clearCredits()
	return nil
}

// announce raises the plug EVENT and lets credits and frames flow.
func (h *Host) announce(c *Cable) {
	h.log.Info("emu: cable plugged", "adapter", c.port.Adapter, "peer", c.port.PeerRoute.String())
	h.router.plugEvent(c.port.PeerRoute, false)
	h.regrant()
	h.kick()
}

// ConnectInProcess joins two hosts in this process with a cable: frames
// cross by direct DMA from one host's TX slot into the other's RX slot.
// It returns each host's end.
func ConnectInProcess(a *Host, pa Port, b *Host, pb Port) (*Cable, *Cable, error) {
	var err error
	if pa, err = pa.normalize(); err != nil {
		return nil, nil, err
	}
	if pb, err = pb.normalize(); err != nil {
		return nil, nil, err
	}
	ea, eb := &inprocEnd{}, &inprocEnd{}
	ca, cb := a.newCable(pa, ea), b.newCable(pb, eb)
	ea.peer, eb.peer = cb, ca
	if err := a.attach(ca); err != nil {
		return nil, nil, err
	}
	if err := b.attach(cb); err != nil {
		a.lane(pa.Adapter).cable.CompareAndSwap(ca, nil)
		return nil, nil, err
	}
	a.announce(ca)
	b.announce(cb)
	return ca, cb, nil
}

// inprocEnd calls straight into the peer host.
type inprocEnd struct{ peer *Cable }

func (e *inprocEnd) live() bool { return e.peer.lane.cable.Load() == e.peer }

func (e *inprocEnd) sendData(hopID uint16, sof, eof uint8, p []byte) {
	if e.live() {
		e.peer.host.deliver(e.peer.lane, hopID, sof, eof, p)
	}
}

func (e *inprocEnd) sendControl(pdf uint8, frame []byte) {
	if e.live() {
		e.peer.host.fromCable(e.peer, pdf, frame)
	}
}

func (e *inprocEnd) sendCredit(hopID uint16, n int32) {
	if e.live() {
		e.peer.host.creditArrived(e.peer.lane, hopID, n)
	}
}

func (e *inprocEnd) sendCreditReset(hopID uint16) {
	if e.live() {
		e.peer.host.creditReset(e.peer.lane, hopID)
	}
}

func (e *inprocEnd) flush() { e.peer.host.flushIRQ() }
func (e *inprocEnd) close() { e.peer.unplug() }

// Dial connects a cable to a listening host ("unix" or "tcp"), runs the
// handshake as the dialing end and plugs the cable in at port. A listener
// that refuses this host (another key, or none) or is busy hangs up: the
// error says so, and the caller may dial again. On a unix socket, with
// Config.SharedMemory on both ends, the cable then runs through shared
// memory (see shm.go).
func (h *Host) Dial(ctx context.Context, network, addr string, port Port) (*Cable, error) {
	port, err := port.normalize()
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("emu dial %s %s: %w", network, addr, err)
	}
	if uc, ok := conn.(*net.UnixConn); ok && h.sharedMemory && !h.shmFailed.Load() {
		conn = &fdConn{UnixConn: uc} // to receive the memfd
	}
	hs, err := h.handshake(ctx, conn, roleDialer, handshakeHooks{})
	var m *shmMap
	if err == nil && hs.shm {
		m, err = h.takeShm(conn.(*fdConn), hs.br)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("emu dial %s %s: handshake: %w", network, addr, err)
	}
	c := h.newSocketCable(conn, port, m, roleDialer)
	if err := h.attach(c); err != nil {
		conn.Close()
		if m != nil {
			m.unmap()
		}
		return nil, err
	}
	h.startSocketCable(c, hs.br)
	return c, nil
}

// takeShm reads the listener's answer to this end's shared-memory offer
// and maps the memfd passed with it; nil when the listener declined.
func (h *Host) takeShm(conn *fdConn, br *bufio.Reader) (*shmMap, error) {
	defer conn.closeFDs()
	conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	defer conn.SetReadDeadline(time.Time{})
	f, err := readHandshakeFrame(br, CableShm)
	if err != nil {
		return nil, fmt.Errorf("read the shared-memory answer: %w", err)
	}
	switch size := binary.BigEndian.Uint32(f.Payload); {
	case size == 0:
		h.log.Info("emu: the listener declined shared memory; the cable uses the socket")
		return nil, nil
	case size != shmRingSize:
		return nil, fmt.Errorf("shared-memory rings of %d bytes, want %d: %w", size, shmRingSize, ErrMalformed)
	case br.Buffered() > 0:
		return nil, fmt.Errorf("data after the shared-memory answer: %w", ErrMalformed)
	}
	fd, err := conn.takeFD()
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	m, err := mapShm(fd)
	if err != nil && !errors.Is(err, ErrMalformed) {
		// This machine cannot map it: offer no more, so the next dial
		// gets a socket cable instead of failing the same way.
		h.shmFailed.Store(true)
		h.log.Error("emu: shared-memory cable failed; this host uses socket cables from now on", "err", err)
	}
	return m, err
}

// offerShm answers a dialer's shared-memory offer: a new memfd, mapped,
// passed to the dialer with the SHM frame. When this machine cannot make
// one, it declines (and offers no more), and the cable uses the socket.
func (h *Host) offerShm(conn net.Conn) (*shmMap, error) {
	uc := conn.(*net.UnixConn) // offersShm checked
	fd, err := newShmFile()
	var m *shmMap
	if err == nil {
		defer unix.Close(fd)
		m, err = mapShm(fd)
	}
	if err != nil {
		h.shmFailed.Store(true)
		h.log.Error("emu: cannot make a shared-memory cable; declined, this host uses socket cables from now on", "err", err)
		decline := appendCableFrame(nil, cableFrame{Kind: CableShm, Payload: make([]byte, cableShmSize)})
		if _, err := conn.Write(decline); err != nil {
			return nil, fmt.Errorf("decline shared memory: %w", err)
		}
		return nil, nil
	}
	if err := sendShm(uc, fd); err != nil {
		m.unmap()
		return nil, err
	}
	return m, nil
}

// offersShm reports whether this end offers shared memory on conn.
func (h *Host) offersShm(conn net.Conn) bool {
	if !h.sharedMemory || h.shmFailed.Load() {
		return false
	}
	switch conn.(type) {
	case *net.UnixConn, *fdConn:
		return true
	}
	return false
}

// newSocketCable makes the cable of a socket that passed the handshake;
// it owns conn (and m, the shared memory the frames then use instead of
// the socket, if not nil) from now on.
func (h *Host) newSocketCable(conn net.Conn, port Port, m *shmMap, role cableRole) *Cable {
	end := &streamEnd{conn: conn, host: h}
	if m != nil {
		end.shm = m
		end.shmW, end.shmR = m.ends(role, &end.closed)
		end.w = end.shmW
	} else {
		end.w = bufio.NewWriterSize(conn, socketBuffer)
	}
	c := h.newCable(port, end)
	end.cable = c
	return c
}

// startSocketCable starts an attached socket cable: the plug event, then
// the read loop on what the handshake left in hs and the rest of the
// socket (or on the shared memory, with a watch on the socket).
func (h *Host) startSocketCable(c *Cable, hs *bufio.Reader) {
	end := c.end.(*streamEnd)
	if end.shm != nil {
		h.announce(c)
		go end.readLoop(end.shmR)
		go end.watchSocket()
		return
	}
	if sc, ok := end.conn.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); ok {
		sc.SetReadBuffer(socketKernelBuffer)
		sc.SetWriteBuffer(socketKernelBuffer)
	}
	br := socketReader(end.conn, hs)
	h.announce(c) // before reading, so an early unplug follows the plug event
	go end.readLoop(br)
}

// SharedMemory reports whether the cable carries its frames through
// shared memory rather than its socket.
func (c *Cable) SharedMemory() bool {
	e, ok := c.end.(*streamEnd)
	return ok && e.shm != nil
}

// streamEnd carries a cable over a byte stream with the framing of the
// package doc: a socket, or the shared-memory rings of shm.go (the
// socket then only tells when the peer goes).
type streamEnd struct {
	host  *Host
	cable *Cable
	conn  net.Conn

	// The shared-memory transport, nil for a plain socket. closed ends
	// its waits: set at close, or when the peer's socket ends (the reader
	// then still delivers what the peer had published).
	shm    *shmMap
	shmW   *shmWriter
	shmR   *shmReader
	closed atomic.Bool

	// wmu protects w, werr, hdr and shmWDone (the writer's hold on shm
	// is released).
	wmu      sync.Mutex
	w        cableWriter
	werr     error
	hdr      [CableHeaderSize]byte
	shmWDone bool

	// Credits and resets wait here until the next flush (the engine's, or
	// the RX doorbell's once it released the ring), so that nothing writes
	// to the socket while it holds a ring lock. cmu protects credits and
	// resets; it is held for no I/O (a ring lock may be held while taking
	// it), and whoever writes them holds wmu too (wmu before cmu), so they
	// reach the peer in the order they were queued: a reset written after
	// the credits granted since would withdraw those for good.
	cmu     sync.Mutex
	credits [laneMaxHopID + 1]int32
	resets  [laneMaxHopID + 1]bool
	dirty   atomic.Bool // something is queued (read without cmu)
}

func (e *streamEnd) write(kind CableKind, sof, eof uint8, hopID uint16, p []byte) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.writeLocked(kind, sof, eof, hopID, p)
}

func (e *streamEnd) writeLocked(kind CableKind, sof, eof uint8, hopID uint16, p []byte) {
	if e.werr != nil {
		return
	}
	hdr := e.hdr[:]
	hdr[cableKindOff] = byte(kind)
	hdr[cablePDFOff] = sof<<4 | eof&0xf
	binary.BigEndian.PutUint16(hdr[cableHopOff:], hopID)
	binary.BigEndian.PutUint16(hdr[cableLenOff:], uint16(len(p)))
	hdr[cableResOff], hdr[cableResOff+1] = 0, 0
	if _, err := e.w.Write(hdr); err != nil {
		e.failLocked(err)
		return
	}
	if _, err := e.w.Write(p); err != nil {
		e.failLocked(err)
	}
}

func (e *streamEnd) failLocked(err error) {
	e.werr = err
	if errors.Is(err, errShmClosed) {
		// The shared-memory cable was closed (the peer's end, or ours):
		// the read loop delivers what the peer published before it, and
		// then unplugs. Unplugging here would drop those frames.
		return
	}
	go e.cable.unplug()
}

// sendData and sendControl write the credits and resets queued before
// them first: a withdrawal (a path disabled, a ring stopped) happened
// before the frame was sent, and the peer must see it in that order, as
// it would on a link (a frame sent after its path went down cannot
// arrive first).
func (e *streamEnd) sendData(hopID uint16, sof, eof uint8, p []byte) {
	e.writeCredits()
	e.write(CableData, sof, eof, hopID, p)
}

func (e *streamEnd) sendControl(pdf uint8, frame []byte) {
	e.writeCredits()
	e.write(CableControl, pdf, pdf, 0, frame)
}

// sendCredit and sendCreditReset queue for the next flush; whoever grants
// flushes (an RX doorbell) or kicks the engine to (see Host.grantLocked).
func (e *streamEnd) sendCredit(hopID uint16, n int32) {
	if hopID <= laneMaxHopID {
		e.cmu.Lock()
		e.credits[hopID] += n
		e.dirty.Store(true)
		e.cmu.Unlock()
	}
}

func (e *streamEnd) sendCreditReset(hopID uint16) {
	if hopID <= laneMaxHopID {
		e.cmu.Lock()
		e.credits[hopID] = 0
		e.resets[hopID] = true
		e.dirty.Store(true)
		e.cmu.Unlock()
	}
}

// writeCredits writes the queued credits and resets into the buffer, each
// HopID's reset before the credits granted after it.
func (e *streamEnd) writeCredits() {
	if !e.dirty.Load() {
		return
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.cmu.Lock()
	e.dirty.Store(false)
	reset, credits := e.resets, e.credits // arrays: copies
	clear(e.resets[:])
	clear(e.credits[:])
	e.cmu.Unlock()
	var count [cableCreditSize]byte
	for hop := range credits {
		if reset[hop] {
			e.writeLocked(CableCreditReset, 0, 0, uint16(hop), nil)
		}
		if n := credits[hop]; n > 0 {
			binary.BigEndian.PutUint32(count[:], uint32(n))
			e.writeLocked(CableCredit, 0, 0, uint16(hop), count[:])
		}
	}
}

func (e *streamEnd) flush() {
	e.writeCredits()
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if e.werr == nil && e.w.Buffered() > 0 {
		if err := e.w.Flush(); err != nil {
			e.failLocked(err)
		}
	}
}

func (e *streamEnd) close() {
	if e.shm != nil {
		// A writer waiting for room holds wmu: end its wait first. The
		// socket's end tells the peer, whose reader delivers what was
		// published before it stops.
		e.closed.Store(true)
		e.shmW.wake()
		e.shmR.wake()
		e.wmu.Lock()
		if !e.shmWDone {
			e.shmWDone = true
			e.shmW.publish()
			e.werr = net.ErrClosed
			e.shm.release() // the writer's reference
		}
		e.wmu.Unlock()
		e.conn.Close()
		return
	}
	e.wmu.Lock()
	if e.werr == nil {
		e.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		e.w.Write(appendCableFrame(nil, cableFrame{Kind: CableUnplug}))
		e.w.Flush()
		e.werr = net.ErrClosed
	}
	e.wmu.Unlock()
	e.conn.Close()
}

// readLoop delivers what the peer sends until the cable closes. A
// malformed frame closes the cable with one log line.
func (e *streamEnd) readLoop(br cableReader) {
	h, c := e.host, e.cable
	defer c.unplug()
	defer h.flushIRQ()
	var own []byte // a private copy of checked payloads, with shared memory
	if e.shm != nil {
		defer e.shm.release() // the reader's reference, once done with the ring
		own = make([]byte, 0, nhi.FrameSize)
	}
	for {
		if br.Buffered() < CableHeaderSize {
			h.flushIRQ() // the batch the peer flushed has been delivered
		}
		f, err := readCableFrame(br)
		if err == nil && e.shm != nil && f.Kind != CableData {
			// The peer can still change bytes in shared memory: what is
			// checked and then used must be a private copy. (DATA is only
			// copied into an RX slot.)
			f.Payload = append(own[:0], f.Payload...)
		}
		if err == nil && (f.Kind == CableHello || f.Kind == CableAuth || f.Kind == CableShm) {
			err = fmt.Errorf("kind %d after the handshake: %w", f.Kind, ErrMalformed)
		}
		if err == nil && f.Kind == CableCredit {
			if n := binary.BigEndian.Uint32(f.Payload); n == 0 || n > nhi.MaxRingSize {
				err = fmt.Errorf("credit of %d: %w", n, ErrMalformed)
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, ErrMalformed):
				h.counters.cableMalformed.Add(1)
				h.log.Warn("emu: cable closed: malformed frame from peer", "adapter", c.port.Adapter, "err", err)
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			default:
				h.log.Info("emu: cable read failed", "adapter", c.port.Adapter, "err", err)
			}
			return
		}
		switch f.Kind {
		case CableData:
			if c.lane.cable.Load() == c {
				h.deliver(c.lane, f.HopID, f.SOF, f.EOF, f.Payload)
			}
		case CableControl:
			if c.lane.cable.Load() == c {
				h.fromCable(c, f.EOF, f.Payload)
			}
		case CableCredit:
			h.creditArrived(c.lane, f.HopID, int32(binary.BigEndian.Uint32(f.Payload)))
		case CableCreditReset:
			h.creditReset(c.lane, f.HopID)
		case CableUnplug:
			return
		}
	}
}

// InjectControl puts a raw frame on this host's RX ring 0 with PDF pdf,
// unchecked, as if a broken peer had sent it: for tests of how software
// handles malformed control packets.
func (h *Host) InjectControl(pdf ctl.Type, frame []byte) {
	if len(frame) > nhi.FrameSize {
		frame = frame[:nhi.FrameSize]
	}
	h.deliverControl(uint8(pdf), frame)
}
