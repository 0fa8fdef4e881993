package emu

// The listening end of socket cables: unix and TCP listeners, and Accept,
// which handshakes several connections at once so that strangers cannot
// keep the real peer out ("Listening" in the package doc).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Listener limits.
const (
	// maxWaiting is how many connections Accept keeps waiting for their
	// hello (a goroutine and a 4 KiB buffer each); a connection arriving
	// when all are taken drops the oldest that is already reading.
	maxWaiting = 64
	// maxHandshakes is how many connections Accept handshakes at once
	// past the hello: with a key, those whose hello carried a valid key
	// tag. A hello arriving when all are taken drops the oldest.
	maxHandshakes = 4
	// maxSeenNonces is how many nonces of tagged hellos a host
	// remembers, so that a replayed hello gets no handshake slot.
	maxSeenNonces = 1024
	// refusalLogInterval: at most one log line of refused connections
	// per interval; the others are counted in the next line.
	refusalLogInterval = time.Second
	// maxAcceptBackoff bounds the pause after a temporary accept error
	// (out of file descriptors).
	maxAcceptBackoff = time.Second
)

// ErrNeedKey is returned for a TCP listener on an address other than
// loopback when the host has no cable key.
var ErrNeedKey = errors.New("a cable listener beyond loopback needs a cable key")

// tcpListenAddr completes addr as ListenTCP does and says whether it is
// on loopback.
func tcpListenAddr(addr string) (string, bool, error) {
	if addr == "" {
		addr = ":0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("emu listen %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || (ip != nil && ip.IsLoopback())
	return net.JoinHostPort(host, port), loopback, nil
}

// CheckTCPListen returns the error ListenTCP gives for addr on a host
// with (keyed) or without a cable key, without listening: for command
// lines to refuse early.
func CheckTCPListen(addr string, keyed bool) error {
	a, loopback, err := tcpListenAddr(addr)
	if err != nil {
		return err
	}
	if !loopback && !keyed {
		return fmt.Errorf("emu listen tcp %s: %w", a, ErrNeedKey)
	}
	return nil
}

// ListenTCP listens for TCP cables to h. An empty address, or one without
// a host, binds to loopback; any other interface must be named explicitly
// and needs a cable key (Config.CableKey), else ListenTCP refuses with
// ErrNeedKey. Without a key, any local user can plug into a loopback
// listener.
func (h *Host) ListenTCP(addr string) (net.Listener, error) {
	if err := CheckTCPListen(addr, h.cableKey != nil); err != nil {
		return nil, err
	}
	a, _, _ := tcpListenAddr(addr)
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return nil, fmt.Errorf("emu listen: %w", err)
	}
	return ln, nil
}

// ListenUnix listens for cables on a unix socket at path, replacing a
// stale socket there. The socket has mode 0600 from the moment it can be
// reached: it is bound in a private directory beside path, given its
// mode, then renamed to path. Only its owner (root, for the daemon) can
// connect. Close removes the socket.
func ListenUnix(path string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".c")
	if err != nil {
		return nil, fmt.Errorf("emu listen unix %s: %w", path, err)
	}
	defer os.Remove(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("emu listen unix %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("emu listen unix %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("emu listen unix %s: %w", path, err)
	}
	return &unixListener{UnixListener: ln, addr: &net.UnixAddr{Name: path, Net: "unix"}}, nil
}

// unixListener is a unix listener known by the path it was renamed to.
type unixListener struct {
	*net.UnixListener
	addr      *net.UnixAddr
	closeOnce sync.Once
}

func (l *unixListener) Addr() net.Addr { return l.addr }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.closeOnce.Do(func() { os.Remove(l.addr.Name) })
	return err
}

// deadliner is a listener whose Accept can be interrupted, as
// *net.TCPListener and *net.UnixListener are.
type deadliner interface {
	SetDeadline(time.Time) error
}

// Accept waits on ln for a peer that passes the handshake (see the
// package doc) and plugs its cable in at port. Connections are
// handshaken concurrently, each within handshakeTimeout, in two stages.
// Up to maxWaiting connections wait for their hello; a new one drops the
// oldest of them whose handshake already started to read (if none has,
// Accept waits for one to: it never outruns its handshakes). A hello
// that passes its checks (with a key: its key tag matches, which no
// stranger can make) moves its connection to one of maxHandshakes slots
// for the rest of the handshake. Strangers holding silent connections or
// opening many therefore only ever drop each other, and the peer, whose
// hello is there as soon as its connection is, gets in.
// Refused connections are counted (Counters.CableRefused) and logged, at
// most one line a second.
//
// ln must have SetDeadline (TCP and unix listeners do). Accept returns
// the first cable plugged in, once the other handshakes are abandoned and
// it stopped accepting: between calls, connections wait in the socket's
// backlog, so a peer dialling while a cable is plugged gets in when the
// caller calls Accept again (as the daemon does at unplug). It returns
// ctx's error at ctx's end, or the listener's if it fails.
func (h *Host) Accept(ctx context.Context, ln net.Listener, port Port) (*Cable, error) {
	port, err := port.normalize()
	if err != nil {
		return nil, err
	}
	dl, ok := ln.(deadliner)
	if !ok {
		return nil, fmt.Errorf("emu accept: listener %T has no SetDeadline", ln)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &acceptor{host: h, port: port, ctx: ctx, won: make(chan *Cable, 1), progress: make(chan struct{}, 1)}
	lnErr := make(chan error, 1)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		lnErr <- a.acceptLoop(ln)
	}()
	var c *Cable
	select {
	case c = <-a.won:
	case err = <-lnErr:
	case <-ctx.Done():
		err = ctx.Err()
	}
	a.stop()
	cancel()
	dl.SetDeadline(time.Unix(1, 0))
	a.wg.Wait()
	dl.SetDeadline(time.Time{})
	if c == nil {
		select {
		case c = <-a.won: // plugged in while Accept was stopping
		default:
		}
	}
	if c != nil {
		return c, nil
	}
	return nil, err
}

// acceptor is one Accept call: its accept loop and handshakes.
type acceptor struct {
	host *Host
	port Port
	ctx  context.Context // ends when Accept returns
	won  chan *Cable     // the cable plugged in, at most one
	wg   sync.WaitGroup  // the accept loop and the handshakes

	// mu guards waiting, shaking, winner and stopped, and the fields of
	// pendingConn.
	mu sync.Mutex
	// waiting are the connections waiting for their hello, oldest first.
	waiting []*pendingConn
	// shaking are the connections past the hello, oldest first.
	shaking []*pendingConn
	// winner passed every check and is being plugged in: no other
	// connection may commit meanwhile.
	winner *pendingConn
	// stopped: a cable won or Accept is returning; nothing more plugs.
	stopped bool
	// progress is signalled when a waiting connection starts to read
	// or leaves the waiting ones: start may find room then.
	progress chan struct{}
}

// pendingConn is a connection in its handshake.
type pendingConn struct {
	conn    net.Conn
	reading bool // its handshake started to read the hello
	dropped bool // made room for a newer connection
}

func (a *acceptor) signal() {
	select {
	case a.progress <- struct{}{}:
	default:
	}
}

func (a *acceptor) startedReading(p *pendingConn) {
	a.mu.Lock()
	p.reading = true
	a.mu.Unlock()
	a.signal()
}

func (a *acceptor) stop() {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
}

// remove takes p out of list.
func remove(list []*pendingConn, p *pendingConn) []*pendingConn {
	for i, q := range list {
		if q == p {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

// admitLocked appends p to list, dropping the oldest if it holds limit
// already; it returns the list and the connection dropped, to be closed.
func admitLocked(list []*pendingConn, p *pendingConn, limit int) ([]*pendingConn, *pendingConn) {
	var drop *pendingConn
	if len(list) >= limit {
		drop = list[0]
		drop.dropped = true
		list = list[1:]
	}
	return append(list, p), drop
}

// gotHello moves p from the waiting connections to the handshake slots,
// unless its hello replays one seen before (with a key).
func (a *acceptor) gotHello(p *pendingConn, nonce [cableNonceSize]byte) error {
	if a.host.cableKey != nil && !a.host.seenNonces.add(nonce) {
		return fmt.Errorf("a replayed hello (its nonce was seen before): %w", ErrRefused)
	}
	a.mu.Lock()
	if p.dropped {
		a.mu.Unlock()
		return errDropped
	}
	a.waiting = remove(a.waiting, p)
	var drop *pendingConn
	a.shaking, drop = admitLocked(a.shaking, p, maxHandshakes)
	a.mu.Unlock()
	a.signal()
	if drop != nil {
		drop.conn.Close() // its handshake fails and is logged
	}
	return nil
}

// commit makes p the winner, unless it was dropped, another connection
// won or Accept is stopping. From then on p cannot be dropped.
func (a *acceptor) commit(p *pendingConn) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case p.dropped:
		return errDropped
	case a.stopped || a.winner != nil:
		return errLost
	}
	a.shaking = remove(a.shaking, p)
	a.winner = p
	return nil
}

// Reasons a handshake that passed its checks does not plug in.
var (
	errDropped = errors.New("dropped in its handshake to make room for a newer connection")
	errLost    = errors.New("another connection plugged in first")
)

// acceptLoop accepts connections until Accept stops it or ln fails.
func (a *acceptor) acceptLoop(ln net.Listener) error {
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if a.ctx.Err() != nil {
				return a.ctx.Err()
			}
			if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) && !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.ENOMEM) {
				return fmt.Errorf("emu accept: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			a.host.log.Warn("emu: cable accept failed, pausing", "err", err, "pause", backoff)
			select {
			case <-a.ctx.Done():
				return a.ctx.Err()
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		a.start(conn)
	}
}

// start handshakes conn on its own goroutine. If maxWaiting connections
// wait for their hello, it drops the oldest of them that started to
// read, or waits until one has.
func (a *acceptor) start(conn net.Conn) {
	p := &pendingConn{conn: conn}
	for {
		a.mu.Lock()
		if a.stopped {
			a.mu.Unlock()
			conn.Close()
			return
		}
		var drop *pendingConn
		if len(a.waiting) >= maxWaiting {
			for _, q := range a.waiting {
				if q.reading {
					drop = q
					break
				}
			}
			if drop == nil {
				a.mu.Unlock()
				select {
				case <-a.progress:
				case <-a.ctx.Done():
					conn.Close()
					return
				}
				continue
			}
			drop.dropped = true
			a.waiting = remove(a.waiting, drop)
		}
		a.waiting = append(a.waiting, p)
		a.wg.Add(1)
		a.mu.Unlock()
		if drop != nil {
			drop.conn.Close() // its handshake fails and is logged
		}
		go a.handshake(p)
		return
	}
}

// handshake runs p's handshake and plugs it in unless another connection
// won first.
func (a *acceptor) handshake(p *pendingConn) {
	defer a.wg.Done()
	h := a.host
	hs, err := h.handshake(a.ctx, p.conn, roleListener, handshakeHooks{
		reading: func() { a.startedReading(p) },
		hello:   func(nonce [cableNonceSize]byte) error { return a.gotHello(p, nonce) },
		commit:  func() error { return a.commit(p) },
	})
	var c *Cable
	var m *shmMap
	if err == nil && hs.shm {
		m, err = h.offerShm(p.conn)
	}
	if err == nil {
		c = h.newSocketCable(p.conn, a.port, m, roleListener)
		if err = h.attach(c); err != nil && m != nil {
			m.unmap()
		}
	}
	a.mu.Lock()
	a.waiting = remove(a.waiting, p)
	a.shaking = remove(a.shaking, p)
	if a.winner == p && err != nil {
		a.winner = nil
	}
	dropped := p.dropped
	a.mu.Unlock()
	a.signal()
	if err == nil {
		h.startSocketCable(c, hs.br)
		a.won <- c
		return
	}
	p.conn.Close()
	switch {
	case dropped:
		err = errDropped
	case errors.Is(err, errLost) || a.ctx.Err() != nil:
		return // Accept is done or another peer won: not this one's fault
	}
	h.cableRefused(p.conn.RemoteAddr(), err)
}

// nonceSet remembers the last maxSeenNonces nonces added.
type nonceSet struct {
	// mu guards the fields below.
	mu   sync.Mutex
	seen map[[cableNonceSize]byte]struct{}
	ring [][cableNonceSize]byte // in order of arrival, from next
	next int
}

// add adds n and says whether it was new.
func (s *nonceSet) add(n [cableNonceSize]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[n]; ok {
		return false
	}
	if s.seen == nil {
		s.seen = make(map[[cableNonceSize]byte]struct{}, maxSeenNonces)
	}
	if len(s.ring) < maxSeenNonces {
		s.ring = append(s.ring, n)
	} else {
		delete(s.seen, s.ring[s.next])
		s.ring[s.next] = n
		s.next = (s.next + 1) % maxSeenNonces
	}
	s.seen[n] = struct{}{}
	return true
}

// refusalLog rate-limits the log lines of refused cable connections.
type refusalLog struct {
	// mu guards the fields below.
	mu sync.Mutex
	// last is when the last line was logged (a refusal or a summary).
	last time.Time
	// suppressed counts refusals not logged since then.
	suppressed int
	// summaryDue: a summary line of the suppressed ones is scheduled.
	summaryDue bool
	// lastErr is the reason of the last suppressed refusal.
	lastErr error
}

// admit records a refusal at now. It says whether to log it at once; if
// not, schedule says whether the caller must call summary after in (a
// summary is then due; until it is taken, no other is scheduled).
func (r *refusalLog) admit(now time.Time, err error) (logNow, schedule bool, in time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.summaryDue && (r.last.IsZero() || now.Sub(r.last) >= refusalLogInterval) {
		r.last = now
		return true, false, 0
	}
	r.suppressed++
	r.lastErr = err
	if r.summaryDue {
		return false, false, 0
	}
	r.summaryDue = true
	return false, true, max(refusalLogInterval-now.Sub(r.last), 0)
}

// summary returns the count of refusals suppressed since the last line
// and the reason of the last of them, and records a line at now if there
// were any.
func (r *refusalLog) summary(now time.Time) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.suppressed, r.lastErr
	r.suppressed, r.summaryDue, r.lastErr = 0, false, nil
	if n > 0 {
		r.last = now
	}
	return n, err
}

// cableRefused counts and logs one refused connection, at most one line
// per refusalLogInterval: the refusals in between are counted and logged
// in one summary line at the end of the interval.
func (h *Host) cableRefused(from net.Addr, err error) {
	h.counters.cableRefused.Add(1)
	logNow, schedule, in := h.refusals.admit(time.Now(), err)
	switch {
	case logNow:
		h.log.Warn("emu: cable connection refused", "from", addrString(from), "err", err)
	case schedule:
		time.AfterFunc(in, func() {
			if n, last := h.refusals.summary(time.Now()); n > 0 {
				h.log.Warn("emu: more cable connections refused", "count", n, "within", refusalLogInterval, "last_err", last)
			}
		})
	}
}

// addrString names a peer's address; unix peers have none.
func addrString(a net.Addr) string {
	s := ""
	if a != nil {
		s = a.String() // "<nil>" for a nil *net.UnixAddr
	}
	if s == "" || s == "<nil>" || s == "@" {
		return "unix socket"
	}
	return s
}
