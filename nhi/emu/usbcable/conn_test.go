package usbcable

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPacking(t *testing.T) {
	for _, tc := range []struct {
		n, max, mps int
		want        []int
	}{
		{0, 64 << 10, 512, nil},
		{1, 64 << 10, 512, []int{1}},
		{511, 64 << 10, 512, []int{511}},
		{512, 64 << 10, 512, []int{512, 0}},
		{1000, 64 << 10, 512, []int{1000}},
		{64 << 10, 64 << 10, 512, []int{64 << 10, 0}},
		{64<<10 + 8, 64 << 10, 512, []int{64 << 10, 8}},
		{256 << 10, 64 << 10, 512, []int{64 << 10, 64 << 10, 64 << 10, 64 << 10, 0}},
		{3 * 64, 1 << 20, 64, []int{192, 0}},
		{3 * 64, 1 << 20, 1024, []int{192}},
	} {
		assert.Equal(t, tc.want, Packing(tc.n, tc.max, tc.mps), "Packing(%d, %d, %d)", tc.n, tc.max, tc.mps)
	}
}

// pipeEnd is one end of an in-memory bulk pipe: what one end writes as a
// transfer, the other reads, cut at most at readMax bytes per read (a UDC
// merging packets may return less or more than a transfer; here, less).
type pipeEnd struct {
	name    string
	in, out chan []byte
	mps     int
	readMax int
	// mu guards sizes and pending.
	mu      sync.Mutex
	sizes   []int // transfers written, in order
	pending []byte
	closed  chan struct{}
	once    *sync.Once
	failW   error // returned by every write, if set
}

func newPipe(mps, readMax int) (*pipeEnd, *pipeEnd) {
	ab, ba := make(chan []byte, 64), make(chan []byte, 64)
	closed, once := make(chan struct{}), new(sync.Once)
	a := &pipeEnd{name: "a", in: ba, out: ab, mps: mps, readMax: readMax, closed: closed, once: once}
	b := &pipeEnd{name: "b", in: ab, out: ba, mps: mps, readMax: readMax, closed: closed, once: once}
	return a, b
}

func (p *pipeEnd) ReadTransfer(buf []byte) (int, error) {
	p.mu.Lock()
	if len(p.pending) == 0 {
		p.mu.Unlock()
		select {
		case t := <-p.in:
			p.mu.Lock()
			p.pending = t
		case <-p.closed:
			return 0, io.ErrClosedPipe
		}
	}
	defer p.mu.Unlock()
	n := min(len(p.pending), len(buf))
	if p.readMax > 0 {
		n = min(n, p.readMax)
	}
	copy(buf, p.pending[:n])
	p.pending = p.pending[n:]
	return n, nil
}

func (p *pipeEnd) WriteTransfer(b []byte) error {
	if p.failW != nil {
		return p.failW
	}
	p.mu.Lock()
	p.sizes = append(p.sizes, len(b))
	p.mu.Unlock()
	select {
	case p.out <- bytes.Clone(b):
		return nil
	case <-p.closed:
		return io.ErrClosedPipe
	}
}

func (p *pipeEnd) MaxPacket() int { return p.mps }
func (p *pipeEnd) Close() error   { p.once.Do(func() { close(p.closed) }); return nil }
func (p *pipeEnd) Name() string   { return "pipe " + p.name }

func (p *pipeEnd) written() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.sizes...)
}

func TestConnCarriesWritesInOrder(t *testing.T) {
	a, b := newPipe(512, 1000)
	ca, cb := NewConn(a), NewConn(b)
	defer ca.Close()
	defer cb.Close()
	var want []byte
	for i, n := range []int{1, 512, 70000, 256 << 10, 3} {
		p := bytes.Repeat([]byte{byte(i + 1)}, n)
		want = append(want, p...)
		got, err := ca.Write(p)
		require.NoError(t, err)
		require.Equal(t, n, got)
	}
	got := make([]byte, len(want))
	_, err := io.ReadFull(cb, got)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "bytes differ")
	assert.Equal(t, []int{1, 512, 0, 65536, 4464, 65536, 65536, 65536, 65536, 0, 3}, a.written())
}

func TestConnReadDeadline(t *testing.T) {
	a, b := newPipe(512, 0)
	ca, cb := NewConn(a), NewConn(b)
	defer ca.Close()
	defer cb.Close()
	cb.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := cb.Read(make([]byte, 10))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	// A deadline moved into the past wakes a blocked Read.
	cb.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := cb.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(5 * time.Millisecond)
	cb.SetDeadline(time.Unix(1, 0))
	assert.ErrorIs(t, <-errc, os.ErrDeadlineExceeded)
	// And the Conn still works after.
	cb.SetDeadline(time.Time{})
	_, err = ca.Write([]byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 5)
	_, err = io.ReadFull(cb, buf)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(buf))
}

func TestConnTransportErrorEndsIt(t *testing.T) {
	a, b := newPipe(512, 0)
	stall := errors.New("transfer stall")
	a.failW = stall
	ca, cb := NewConn(a), NewConn(b)
	defer cb.Close()
	ca.Write([]byte("x"))
	// The writer fails and closes the transport: the peer's reads end.
	_, err := cb.Read(make([]byte, 1))
	assert.Error(t, err)
	require.Eventually(t, func() bool {
		_, err := ca.Write([]byte("y"))
		return errors.Is(err, stall)
	}, 5*time.Second, time.Millisecond)
	assert.ErrorIs(t, ca.Err(), stall)
	ca.Close()
	_, err = ca.Read(make([]byte, 1))
	assert.ErrorIs(t, err, ErrClosed)
}

func TestParseSelector(t *testing.T) {
	s, err := ParseSelector("")
	require.NoError(t, err)
	assert.Equal(t, Selector{ID: DefaultID}, s)
	s, err = ParseSelector("1234:abcd")
	require.NoError(t, err)
	assert.Equal(t, Selector{ID: ID{0x1234, 0xabcd}}, s)
	s, err = ParseSelector("3.2")
	require.NoError(t, err)
	assert.Equal(t, Selector{Bus: 3, Addr: 2}, s)
	for _, bad := range []string{"x", "1:", ":2", "12345:1", "0.1", "1.200", "a.b", "1d6b"} {
		_, err := ParseSelector(bad)
		assert.Error(t, err, bad)
	}
}

// FuzzPacking: whatever the write sizes and however the reading side cuts
// the bulk reads, the bytes arrive whole and in order, no transfer is
// larger than MaxTransfer, and every write ends with a short transfer or
// a ZLP.
func FuzzPacking(f *testing.F) {
	f.Add([]byte{1, 2, 3}, uint16(512), uint16(100))
	f.Add(bytes.Repeat([]byte{0xff}, 40), uint16(64), uint16(0))
	f.Add([]byte{0, 0, 8}, uint16(1024), uint16(7))
	f.Add([]byte{255, 255, 255, 255, 16, 32, 64}, uint16(512), uint16(4096))
	f.Fuzz(func(t *testing.T, sizes []byte, mps, readMax uint16) {
		if mps == 0 || len(sizes) > 8 {
			return
		}
		maxPacket := int(mps)
		a, b := newPipe(maxPacket, int(readMax))
		ca, cb := NewConn(a), NewConn(b)
		defer ca.Close()
		defer cb.Close()
		var want []byte
		var ends []int // transfers of each write
		for _, s := range sizes {
			n := 2 * int(s) * int(s) // up to 127 KiB: up to two transfers
			ends = append(ends, len(Packing(n, MaxTransfer, maxPacket)))
			for j := 0; j < n; j++ {
				want = append(want, byte(len(want)*7))
			}
		}
		errc := make(chan error, 1)
		go func() {
			off := 0
			for _, s := range sizes {
				n := 2 * int(s) * int(s)
				if _, err := ca.Write(want[off : off+n]); err != nil {
					errc <- err
					return
				}
				off += n
			}
			errc <- nil
		}()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(cb, got); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("bytes differ")
		}
		total := 0
		for _, e := range ends {
			total += e
		}
		// A write's ZLP carries no bytes: it may still be on its way
		// when the reader has them all.
		ws := a.written()
		for i := 0; len(ws) < total && i < 5000; i++ {
			time.Sleep(time.Millisecond)
			ws = a.written()
		}
		if len(ws) != total {
			t.Fatalf("%d transfers, want %d", len(ws), total)
		}
		k := 0
		for _, e := range ends {
			if e == 0 {
				continue
			}
			for _, n := range ws[k : k+e] {
				if n > MaxTransfer {
					t.Fatalf("transfer of %d bytes", n)
				}
			}
			if last := ws[k+e-1]; last%maxPacket == 0 && last != 0 {
				t.Fatalf("a write ends with a transfer of %d bytes, a multiple of %d, and no ZLP", last, maxPacket)
			}
			k += e
		}
	})
}

func TestConnWaitData(t *testing.T) {
	a, b := newPipe(512, 0)
	ca, cb := NewConn(a), NewConn(b)
	defer ca.Close()
	defer cb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, cb.WaitData(ctx), context.DeadlineExceeded)
	ca.Write([]byte("hello"))
	require.NoError(t, cb.WaitData(context.Background()))
	buf := make([]byte, 5)
	_, err := io.ReadFull(cb, buf)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(buf), "WaitData keeps what it saw for Read")
	ca.Close()
	assert.Error(t, cb.WaitData(context.Background()))
}

// sink is a Transport that takes every transfer and sends nothing back.
type sink struct {
	sent   chan int // bytes of each transfer written
	closed chan struct{}
	once   sync.Once
}

func (s *sink) ReadTransfer([]byte) (int, error) { <-s.closed; return 0, io.ErrClosedPipe }
func (s *sink) WriteTransfer(b []byte) error {
	select {
	case s.sent <- len(b):
		return nil
	case <-s.closed:
		return io.ErrClosedPipe
	}
}
func (s *sink) MaxPacket() int { return 512 }
func (s *sink) Close() error   { s.once.Do(func() { close(s.closed) }); return nil }
func (s *sink) Name() string   { return "sink" }

// A steady stream of writes reuses the transfers' buffers: a new 64 KiB
// buffer per transfer was most of the gadget daemon's garbage collection.
func TestConnWritesReuseTheirBuffers(t *testing.T) {
	s := &sink{sent: make(chan int), closed: make(chan struct{})}
	c := NewConn(s)
	defer c.Close()
	taken := make(chan int) // transfers the sink took so far, on request
	go func() {
		n := 0
		for {
			select {
			case <-s.sent:
				n++
			case taken <- n:
			case <-s.closed:
				return
			}
		}
	}()
	p := make([]byte, 256<<10)
	perWrite := len(Packing(len(p), MaxTransfer, s.MaxPacket())) // 4 × 64 KiB and a ZLP
	writes := 0
	write := func(n int) {
		for range n {
			_, err := c.Write(p)
			require.NoError(t, err)
		}
		writes += n
		for <-taken < writes*perWrite {
			runtime.Gosched()
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	write(50)
	runtime.ReadMemStats(&after)
	// About one buffer for each transfer that can be in flight at once
	// (queued, being sent, being queued; twice that as the bound), and
	// Packing's small slices. A buffer per transfer was 200 buffers,
	// 12.5 MiB, here.
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(2*(txQueue+2)*MaxTransfer), "bytes allocated by 50 writes of 256 KiB")
}
