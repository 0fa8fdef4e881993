package usbcable

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Transport is one session's bulk pipe, as a device or host side gives
// it. Conn calls ReadTransfer from one goroutine and WriteTransfer from
// another, never two of either at once.
type Transport interface {
	// ReadTransfer reads what the next bulk read returns into p
	// (len(p) = MaxTransfer): n > 0 bytes, or an error that ends the
	// session. A read of 0 bytes and no error (a ZLP) is allowed.
	ReadTransfer(p []byte) (int, error)
	// WriteTransfer sends p as one bulk transfer; len(p) == 0 sends a
	// zero-length packet. An error ends the session. It must not keep p
	// once it returns: Conn reuses the buffer for a later transfer.
	WriteTransfer(p []byte) error
	// MaxPacket is the OUT/IN endpoints' wMaxPacketSize, for the ZLP rule
	// (a multiple of every speed's value will do where it is unknown).
	MaxPacket() int
	// Close ends the session and makes blocked ReadTransfer and
	// WriteTransfer calls return. It may be called more than once.
	Close() error
	// Name says what the pipe is, for errors and logs ("usb 3-1").
	Name() string
}

// Packing computes the bulk transfers a write of n bytes becomes (see
// "Packing" in the package doc): their lengths in order, 0 for a ZLP.
func Packing(n, maxTransfer, maxPacket int) []int {
	if n <= 0 {
		return nil
	}
	var out []int
	for n > maxTransfer {
		out = append(out, maxTransfer)
		n -= maxTransfer
	}
	out = append(out, n)
	if maxPacket > 0 && n%maxPacket == 0 {
		out = append(out, 0)
	}
	return out
}

// Conn is a cable's byte stream over a Transport: a net.Conn with
// deadlines, for emu.Host.PlugStream. Writes are packed into bulk
// transfers (Packing) and queued; a writer goroutine sends them in order.
// A reader goroutine keeps one read outstanding. The first transport
// error ends the Conn: every later Read and Write returns it.
type Conn struct {
	t         Transport
	maxPacket int

	rx chan []byte // bulk reads, in order; closed at the reader's end
	tx chan []byte // transfers to send, in order (nil slice: stop)

	// mu guards pending, rerr, werr, and the deadlines.
	mu        sync.Mutex
	pending   []byte // the part of the last chunk Read has not returned
	rerr      error  // why the reader ended, once rx is closed
	werr      error  // why the writer ended
	rdeadline time.Time
	wdeadline time.Time
	// dlChanged is closed (and replaced) when a deadline changes, so
	// that a blocked Read or Write looks at the new one.
	dlChanged chan struct{}

	done      chan struct{} // closed by Close
	wdone     chan struct{} // closed when the writer goroutine ends
	closeOnce sync.Once
	// free recycles read buffers (a chunk is handed to Read, then back).
	free chan []byte
	// txFree recycles write buffers (queued by Write, sent by the writer,
	// then back), so that a stream of writes allocates nothing: a new
	// MaxTransfer buffer per transfer was most of the gadget daemon's
	// garbage collection during a backup.
	txFree chan []byte
}

// txQueue is how many transfers may wait for the writer: with MaxTransfer
// each, 256 KiB (one emu pass) plus a ZLP fits.
const txQueue = 8

// NewConn starts the reader and writer goroutines on t.
func NewConn(t Transport) *Conn {
	c := &Conn{
		t:         t,
		maxPacket: t.MaxPacket(),
		rx:        make(chan []byte, ReadsInFlight),
		tx:        make(chan []byte, txQueue),
		done:      make(chan struct{}),
		wdone:     make(chan struct{}),
		free:      make(chan []byte, ReadsInFlight+2),
		txFree:    make(chan []byte, txQueue+2), // queued, being sent, being queued
		dlChanged: make(chan struct{}),
	}
	go c.readLoop()
	go c.writeLoop()
	return c
}

// ErrClosed is returned by a Conn's Read and Write after Close.
var ErrClosed = net.ErrClosed

func (c *Conn) readLoop() {
	defer close(c.rx)
	for {
		var buf []byte
		select {
		case buf = <-c.free:
		default:
			buf = make([]byte, MaxTransfer)
		}
		n, err := c.t.ReadTransfer(buf[:MaxTransfer])
		if n > 0 {
			select {
			case c.rx <- buf[:n]:
			case <-c.done:
				err = ErrClosed
			}
		}
		if err == nil {
			select {
			case <-c.done:
				err = ErrClosed
			default:
			}
		}
		if err != nil {
			c.mu.Lock()
			c.rerr = fmt.Errorf("%s: read: %w", c.t.Name(), err)
			c.mu.Unlock()
			c.t.Close() // the other direction ends too
			return
		}
	}
}

func (c *Conn) writeLoop() {
	defer close(c.wdone)
	for {
		select {
		case p := <-c.tx:
			if err := c.t.WriteTransfer(p); err != nil {
				c.mu.Lock()
				c.werr = fmt.Errorf("%s: write: %w", c.t.Name(), err)
				c.mu.Unlock()
				c.t.Close()
				return
			}
			select {
			case c.txFree <- p[:cap(p)]:
			default:
			}
		case <-c.done:
			return
		}
	}
}

// timer returns a channel that fires at d (never for the zero time).
func timer(d time.Time) (<-chan time.Time, func() bool) {
	if d.IsZero() {
		return nil, func() bool { return false }
	}
	t := time.NewTimer(time.Until(d))
	return t.C, t.Stop
}

// Read returns the stream's next bytes, as many as one bulk read brought
// and p holds.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for {
		dl, changed := c.deadline(false)
		fire, stop := timer(dl)
		select {
		case <-changed:
			stop()
			continue
		case chunk, ok := <-c.rx:
			if !ok {
				stop()
				c.mu.Lock()
				err := c.rerr
				c.mu.Unlock()
				select {
				case <-c.done:
					err = ErrClosed
				default:
				}
				return 0, err
			}
			n := copy(p, chunk)
			if n < len(chunk) {
				c.mu.Lock()
				c.pending = chunk[n:]
				c.mu.Unlock()
			} else {
				c.recycle(chunk)
			}
			stop()
			return n, nil
		case <-fire:
			return 0, os.ErrDeadlineExceeded
		case <-c.done:
			stop()
			return 0, ErrClosed
		}
	}
}

// deadline returns the read (or write) deadline and the channel closed
// when a deadline changes.
func (c *Conn) deadline(write bool) (time.Time, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if write {
		return c.wdeadline, c.dlChanged
	}
	return c.rdeadline, c.dlChanged
}

// setDeadlines sets the deadlines chosen and wakes blocked calls.
func (c *Conn) setDeadlines(r, w *time.Time) {
	c.mu.Lock()
	if r != nil {
		c.rdeadline = *r
	}
	if w != nil {
		c.wdeadline = *w
	}
	close(c.dlChanged)
	c.dlChanged = make(chan struct{})
	c.mu.Unlock()
}

// WaitData blocks until the peer sent something (kept for Read), the
// session ends or ctx ends. The device side calls it before its
// handshake, so that a host that enabled the function but runs no daemon
// yet is waited for, not timed out and unplugged.
func (c *Conn) WaitData(ctx context.Context) error {
	c.mu.Lock()
	have := len(c.pending) > 0
	c.mu.Unlock()
	if have {
		return nil
	}
	select {
	case chunk, ok := <-c.rx:
		if !ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.rerr != nil {
				return c.rerr
			}
			return ErrClosed
		}
		c.mu.Lock()
		c.pending = chunk
		c.mu.Unlock()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

func (c *Conn) recycle(chunk []byte) {
	if cap(chunk) >= MaxTransfer {
		select {
		case c.free <- chunk[:cap(chunk)]:
		default:
		}
	}
}

// Write packs p into transfers and queues them; it returns once all are
// queued (not sent), blocking while the queue is full.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	werr := c.werr
	c.mu.Unlock()
	if werr != nil {
		return 0, werr
	}
	written := 0
	for _, n := range Packing(len(p), MaxTransfer, c.maxPacket) {
		if err := c.queue(p[written : written+n]); err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// queue hands one transfer to the writer goroutine.
func (c *Conn) queue(p []byte) error {
	var chunk []byte
	select {
	case chunk = <-c.txFree:
		chunk = chunk[:len(p)]
	default:
		chunk = make([]byte, len(p), MaxTransfer)
	}
	copy(chunk, p)
	for {
		dl, changed := c.deadline(true)
		if !dl.IsZero() && !time.Now().Before(dl) {
			return os.ErrDeadlineExceeded
		}
		fire, stop := timer(dl)
		select {
		case c.tx <- chunk:
			stop()
			return nil
		case <-changed:
			stop()
			continue
		case <-fire:
			return os.ErrDeadlineExceeded
		case <-c.done:
			stop()
			return ErrClosed
		case <-c.wdone:
			stop()
			c.mu.Lock()
			err := c.werr
			c.mu.Unlock()
			if err == nil {
				err = ErrClosed
			}
			return err
		}
	}
}

// Close ends the Conn and its transport's session.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.t.Close()
	})
	return nil
}

// Err returns why the session ended (nil while it runs or after a plain
// Close): the first transport error of either direction.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.rerr, c.werr)
}

type usbAddr string

func (a usbAddr) Network() string { return "usb" }
func (a usbAddr) String() string  { return string(a) }

func (c *Conn) LocalAddr() net.Addr  { return usbAddr(c.t.Name()) }
func (c *Conn) RemoteAddr() net.Addr { return usbAddr(c.t.Name()) }

func (c *Conn) SetDeadline(t time.Time) error      { c.setDeadlines(&t, &t); return nil }
func (c *Conn) SetReadDeadline(t time.Time) error  { c.setDeadlines(&t, nil); return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { c.setDeadlines(nil, &t); return nil }

var _ net.Conn = (*Conn)(nil)
