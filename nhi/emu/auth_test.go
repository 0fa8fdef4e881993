package emu_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
)

// hangGuard bounds the waits of these tests; it is never a speed
// assertion: a passing run takes a fraction of it.
const hangGuard = 60 * time.Second

func randomKey(tb testing.TB) []byte {
	key := make([]byte, 32)
	rand.Read(key)
	return key
}

func sameDevice(d nhi.Device) nhi.Device { return d }

// keyedHost is a test host with cable key key (nil: none), logging to
// log (nil: nowhere).
func keyedHost(tb testing.TB, name string, key []byte, log io.Writer) *testHost {
	if log == nil {
		log = io.Discard
	}
	logger := slog.New(slog.NewTextHandler(log, nil))
	return newTestHostWith(tb, emu.Config{Name: name, Logger: logger, CableKey: key}, sameDevice)
}

// listenOn listens for cables to th over kind ("unix" or "tcp").
func listenOn(tb testing.TB, kind string, th *testHost) net.Listener {
	tb.Helper()
	var ln net.Listener
	var err error
	if kind == "unix" {
		ln, err = emu.ListenUnix(filepath.Join(tb.TempDir(), "cable.sock"))
	} else {
		ln, err = th.emu.ListenTCP("")
	}
	require.NoError(tb, err)
	tb.Cleanup(func() { ln.Close() })
	return ln
}

type acceptResult struct {
	cable *emu.Cable
	err   error
}

// acceptAsync runs Accept on th until ctx ends.
func acceptAsync(ctx context.Context, th *testHost, ln net.Listener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := th.emu.Accept(ctx, ln, emu.Port{Adapter: 1})
		ch <- acceptResult{c, err}
	}()
	return ch
}

// waitRefused waits until th's listener has refused n connections.
func waitRefused(tb testing.TB, th *testHost, n uint64) {
	tb.Helper()
	require.Eventually(tb, func() bool { return th.emu.Counters().CableRefused >= n }, hangGuard, time.Millisecond,
		"refusals: %d, want %d", th.emu.Counters().CableRefused, n)
}

// requireNotPlugged checks that th raised no plug EVENT and that Accept
// has not returned.
func requireNotPlugged(tb testing.TB, th *testHost, accepted <-chan acceptResult) {
	tb.Helper()
	for {
		select {
		case p := <-th.events:
			if ev, ok := p.(*ctl.Event); ok && !ev.Unplug {
				tb.Fatalf("%s was plugged: %v", th.emu.Name(), ev)
			}
			continue
		default:
		}
		break
	}
	if accepted != nil {
		select {
		case r := <-accepted:
			tb.Fatalf("Accept returned %v, %v: a party that failed the handshake was plugged", r.cable, r.err)
		default:
		}
	}
}

// rawHello is a HELLO frame as a stranger makes it up: version, flags,
// UID and nonce of its choosing, no key.
func rawHello(version, flags uint16, uid uint64) []byte {
	size := 80
	if version == 1 {
		size = 16 // "TBSC", version, reserved, UID: today's hello then
	}
	f := []byte{byte(emu.CableHello), 0, 0, 0, 0, byte(size), 0, 0}
	p := make([]byte, size)
	copy(p, "TBSC")
	binary.BigEndian.PutUint16(p[4:], version)
	binary.BigEndian.PutUint16(p[6:], flags)
	binary.BigEndian.PutUint64(p[8:], uid)
	if size > 16 {
		rand.Read(p[16:48]) // nonce; the tag stays zero: no key
	}
	return append(f, p...)
}

// TestCableKeyCarriesData: two hosts with the same key plug in over unix
// and TCP and carry frames both ways; nothing is refused.
func TestCableKeyCarriesData(t *testing.T) {
	for _, kind := range []string{"unix", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			key := randomKey(t)
			f := newFabricOf(t, kind, keyedHost(t, "host1", key, nil), keyedHost(t, "host2", key, nil))
			s1 := openStream(t, f.host1, lane1, 8, 9, streamOpts{})
			s2 := openStream(t, f.host2, lane2, 9, 8, streamOpts{})
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			for i, p := range []struct{ tx, rx *nhi.Ring }{{s1.tx, s2.rx}, {s2.tx, s1.rx}} {
				want := pattern(make([]byte, nhi.MaxFrameSize), i)
				_, err := p.tx.Write(ctx, want, pdfFrameStart, pdfData)
				require.NoError(t, err)
				_, got := readFrame(t, p.rx, hangGuard)
				require.True(t, bytes.Equal(want, got), "frame %d corrupted", i)
			}
			require.Zero(t, f.host1.emu.Counters().CableRefused)
			require.Zero(t, f.host2.emu.Counters().CableRefused)
		})
	}
}

// TestCableHandshakeRefused: a wrong key, or a key on one end only, is
// refused by both ends before either is plugged.
func TestCableHandshakeRefused(t *testing.T) {
	k1, k2 := randomKey(t), randomKey(t)
	for _, tc := range []struct {
		name               string
		listenKey, dialKey []byte
	}{
		{"wrong key", k1, k2},
		{"dialer without key", k1, nil},
		{"listener without key", nil, k1},
	} {
		for _, kind := range []string{"unix", "tcp"} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				l := keyedHost(t, "listener", tc.listenKey, nil)
				d := keyedHost(t, "dialer", tc.dialKey, nil)
				ln := listenOn(t, kind, l)
				ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
				defer cancel()
				accepted := acceptAsync(ctx, l, ln)

				c, err := d.emu.Dial(ctx, ln.Addr().Network(), ln.Addr().String(), emu.Port{Adapter: 1})
				require.Error(t, err)
				require.Nil(t, c)
				if tc.listenKey == nil || tc.dialKey == nil {
					require.ErrorIs(t, err, emu.ErrRefused)
				}
				waitRefused(t, l, 1)
				requireNotPlugged(t, l, accepted)
				requireNotPlugged(t, d, nil)

				cancel()
				r := <-accepted
				require.Nil(t, r.cable)
				require.ErrorIs(t, r.err, context.Canceled)
			})
		}
	}
}

// TestStrangerRefusedPeerGetsIn: strangers without the key — the made-up
// hello that today's listener accepted as the peer, a keyless hello, a
// made-up proof, this host's own hello sent back, junk — are each hung
// up on and never plugged; the real peer then plugs in.
func TestStrangerRefusedPeerGetsIn(t *testing.T) {
	for _, kind := range []string{"unix", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			key := randomKey(t)
			var log syncBuffer
			l := keyedHost(t, "listener", key, &log)
			d := keyedHost(t, "peer", key, nil)
			ln := listenOn(t, kind, l)
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			accepted := acceptAsync(ctx, l, ln)

			strangers := []struct {
				name string
				act  func(conn net.Conn) error
			}{
				{"made-up hello of version 1", func(conn net.Conn) error {
					_, err := conn.Write(rawHello(1, 0, 0xfeedface))
					return err
				}},
				{"keyless hello", func(conn net.Conn) error {
					_, err := conn.Write(rawHello(emu.CableVersion, 0, 0xfeedface))
					return err
				}},
				{"key flag, no tag and a made-up proof", func(conn net.Conn) error {
					proof := append([]byte{byte(emu.CableAuth), 0, 0, 0, 0, 32, 0, 0}, randomKey(t)...)
					_, err := conn.Write(append(rawHello(emu.CableVersion, 1, 0xfeedface), proof...))
					return err
				}},
				{"the listener's own hello sent back", func(conn net.Conn) error {
					hello := make([]byte, 8+80)
					if _, err := io.ReadFull(conn, hello); err != nil {
						return err
					}
					_, err := conn.Write(hello)
					return err
				}},
				{"junk", func(conn net.Conn) error {
					_, err := conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
					return err
				}},
			}
			for i, s := range strangers {
				conn, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
				require.NoError(t, err)
				conn.SetDeadline(time.Now().Add(hangGuard))
				require.NoError(t, s.act(conn), s.name)
				_, err = io.Copy(io.Discard, conn) // until the listener hangs up
				if err != nil {
					require.ErrorIs(t, err, syscall.ECONNRESET, s.name)
				}
				conn.Close()
				waitRefused(t, l, uint64(i+1))
				requireNotPlugged(t, l, accepted)
			}
			require.Contains(t, log.String(), "hello version 1, want 2", "the first refusal is logged with its reason")

			c, err := d.emu.Dial(ctx, ln.Addr().Network(), ln.Addr().String(), emu.Port{Adapter: 1})
			require.NoError(t, err)
			defer c.Close()
			r := <-accepted
			require.NoError(t, r.err)
			defer r.cable.Close()
			waitEvent(t, l, false)
			waitEvent(t, d, false)
		})
	}
}

// TestPeerGetsInPastStrangers: a stranger holds a silent connection,
// then floods the listener: at least 200 connections before the peer
// dials, and on without pause until the peer is plugged (silent ones and
// made-up hellos, up to 300 held open at once). The real peer, dialling
// again whenever it is hung up on as the daemon does, gets plugged in
// during the flood. Today's listener handshook one connection at a time
// for 5 s each: Accept failed on the silent connection.
func TestPeerGetsInPastStrangers(t *testing.T) {
	for _, kind := range []string{"unix", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			key := randomKey(t)
			l := keyedHost(t, "listener", key, nil)
			d := keyedHost(t, "peer", key, nil)
			ln := listenOn(t, kind, l)
			network, addr := ln.Addr().Network(), ln.Addr().String()
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()

			silent, err := net.Dial(network, addr)
			require.NoError(t, err)
			defer silent.Close() // first in the backlog: Accept meets it first
			accepted := acceptAsync(ctx, l, ln)

			stop := make(chan struct{})
			stopFlood := sync.OnceFunc(func() { close(stop) })
			defer stopFlood() // also when the test fails
			started := make(chan struct{})
			flooded := make(chan int, 1)
			go func() {
				var held []net.Conn
				defer func() {
					for _, c := range held {
						c.Close()
					}
				}()
				n := 0
				for {
					select {
					case <-stop:
						flooded <- n
						return
					default:
					}
					c, err := net.Dial(network, addr)
					if err != nil {
						continue // a full backlog; try again
					}
					if n++; n%2 == 0 {
						c.Write(rawHello(emu.CableVersion, 0, uint64(n)))
					}
					if held = append(held, c); len(held) > 300 {
						held[0].Close()
						held = held[1:]
					}
					if n == 200 {
						close(started)
					}
				}
			}()
			select {
			case <-started:
			case <-ctx.Done():
				t.Fatal("the flood did not start")
			}

			var c *emu.Cable
			tries := 1
			for ; ; tries++ {
				c, err = d.emu.Dial(ctx, network, addr, emu.Port{Adapter: 1})
				if err == nil {
					break
				}
				require.NoError(t, ctx.Err(), "the peer never got in (%d tries, last: %v)", tries, err)
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
			defer c.Close()
			r := <-accepted
			require.NoError(t, r.err)
			require.NotNil(t, r.cable)
			defer r.cable.Close()
			stopFlood()
			n := <-flooded
			waitEvent(t, l, false)
			waitEvent(t, d, false)
			t.Logf("plugged in at try %d, during a flood of %d connections; %d refused", tries, n, l.emu.Counters().CableRefused)
		})
	}
}

// TestTCPListenBeyondLoopbackNeedsKey: without a key a TCP listener binds
// only to loopback; with one, any address is allowed.
func TestTCPListenBeyondLoopbackNeedsKey(t *testing.T) {
	keyless := keyedHost(t, "keyless", nil, nil)
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:7000", "example.invalid:7000"} {
		ln, err := keyless.emu.ListenTCP(addr)
		require.ErrorIs(t, err, emu.ErrNeedKey, addr)
		require.Nil(t, ln)
		require.ErrorIs(t, emu.CheckTCPListen(addr, false), emu.ErrNeedKey, addr)
		require.NoError(t, emu.CheckTCPListen(addr, true), addr)
	}
	for _, addr := range []string{"", ":0", "127.0.0.1:0", "localhost:0"} {
		ln, err := keyless.emu.ListenTCP(addr)
		require.NoError(t, err, addr)
		host, _, err := net.SplitHostPort(ln.Addr().String())
		require.NoError(t, err)
		require.True(t, net.ParseIP(host).IsLoopback(), "%q listens on %s", addr, ln.Addr())
		ln.Close()
	}
}

// TestCableKeyFile: a key file others may read is refused with one clear
// error; 0600 and 0400 are accepted, surrounding white space dropped.
func TestCableKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	const key = "c2VjcmV0IGtleSBvZiB0aGUgY2FibGU="
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o666} {
		p := write(fmt.Sprintf("key-%o", mode), mode, key+"\n")
		_, err := emu.LoadCableKey(p)
		require.Error(t, err)
		require.ErrorContains(t, err, fmt.Sprintf("mode %04o", mode))
		require.ErrorContains(t, err, "want 0600 or stricter")
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		got, err := emu.LoadCableKey(write(fmt.Sprintf("key-%o", mode), mode, " "+key+"\n"))
		require.NoError(t, err)
		require.Equal(t, key, string(got))
	}
	_, err := emu.LoadCableKey(write("short", 0o600, "too short\n"))
	require.ErrorContains(t, err, "want 16..")
	_, err = emu.LoadCableKey(dir)
	require.Error(t, err)
	_, err = emu.LoadCableKey(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = emu.NewHost(emu.Config{CableKey: []byte("short")})
	require.Error(t, err, "a host refuses a short key")
}

// TestUnixCableSocketRootOnly: the unix cable socket has mode 0600 even
// under umask 0, replaces a stale socket, and goes away at Close.
func TestUnixCableSocketRootOnly(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "cable.sock")
	stale, err := net.Listen("unix", path)
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	ln, err := emu.ListenUnix(path)
	require.NoError(t, err)
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, os.ModeSocket, fi.Mode().Type())
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Equal(t, path, ln.Addr().String())
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "nothing left beside the socket")

	conn, err := net.Dial("unix", path)
	require.NoError(t, err, "the renamed socket answers at its path")
	conn.Close()
	require.NoError(t, ln.Close())
	_, err = os.Lstat(path)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReflectionRefused: a host that listens and also dials (the daemon
// may do both) dials a stranger, which opens a connection to the host's
// listener and relays each of the host's frames to the host's other end:
// the host's hellos and proofs, reflected, would make the host prove the
// key to itself. Both ends see their own router UID in the peer's hello
// and refuse; nothing is plugged.
func TestReflectionRefused(t *testing.T) {
	key := randomKey(t)
	a := keyedHost(t, "victim", key, nil)
	lnA := listenOn(t, "tcp", a)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	accepted := acceptAsync(ctx, a, lnA)

	lnX, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lnX.Close()
	dialed := make(chan error, 1)
	go func() {
		c, err := a.emu.Dial(ctx, "tcp", lnX.Addr().String(), emu.Port{Adapter: 2})
		if c != nil {
			c.Close()
		}
		dialed <- err
	}()
	toDialer, err := lnX.Accept() // the victim dialling the stranger
	require.NoError(t, err)
	defer toDialer.Close()
	toListener, err := net.Dial("tcp", lnA.Addr().String()) // the stranger at the victim's listener
	require.NoError(t, err)
	defer toListener.Close()
	relay := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
	}
	go relay(toListener, toDialer)
	go relay(toDialer, toListener)

	err = <-dialed
	require.ErrorIs(t, err, emu.ErrRefused)
	require.ErrorContains(t, err, "own router UID")
	waitRefused(t, a, 1)
	requireNotPlugged(t, a, accepted)
}

// TestReplayedHelloRefused: a stranger who captured the peer's hello (it
// carries a valid key tag, made for its nonce) gets at most one handshake
// slot with it, and cannot finish the handshake; sent again, the hello is
// refused at once. The real peer gets in meanwhile.
func TestReplayedHelloRefused(t *testing.T) {
	key := randomKey(t)
	var log syncBuffer
	l := keyedHost(t, "listener", key, &log)
	d := keyedHost(t, "peer", key, nil)
	ln := listenOn(t, "tcp", l)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()

	// Capture a hello of the peer's: it dials the stranger.
	lnX, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lnX.Close()
	go func() {
		if c, err := d.emu.Dial(ctx, "tcp", lnX.Addr().String(), emu.Port{Adapter: 1}); err == nil {
			c.Close()
		}
	}()
	conn, err := lnX.Accept()
	require.NoError(t, err)
	hello := make([]byte, 8+80)
	_, err = io.ReadFull(conn, hello)
	require.NoError(t, err)
	conn.Close()

	accepted := acceptAsync(ctx, l, ln)
	replay := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		_, err = c.Write(hello)
		require.NoError(t, err)
		return c
	}
	// One of the two (they are handshaken concurrently) holds a slot
	// until its handshake times out; the other is refused at once.
	first := replay()
	defer first.Close()
	second := replay()
	defer second.Close()
	require.Eventually(t, func() bool { return bytes.Contains([]byte(log.String()), []byte("replayed hello")) }, hangGuard, time.Millisecond)
	requireNotPlugged(t, l, accepted)

	c, err := d.emu.Dial(ctx, "tcp", ln.Addr().String(), emu.Port{Adapter: 1})
	require.NoError(t, err)
	defer c.Close()
	r := <-accepted
	require.NoError(t, r.err)
	defer r.cable.Close()
}
