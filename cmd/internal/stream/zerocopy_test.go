package stream_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"tbstream/cmd/internal/host"
	"tbstream/cmd/internal/stream"
	"tbstream/configfs"
	"tbstream/cuse"
	"tbstream/cuse/fakekernel"
	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
	"tbstream/xdomain"
)

// The tests here run two emulated hosts joined in process. With cuse set,
// every device is served by a real cuse.Server over a fake kernel (so
// WRITE payloads are read into the buffers the stream lends); without it
// the tests call the devices directly, as the FUSE fallback does.

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// devices is a stream.Devices for the tests.
type devices struct {
	t    *testing.T
	cuse bool
	mu   sync.Mutex
	m    map[string]*node
}

type node struct {
	st  *stream.Stream
	spy *spyDevice
	k   *fakekernel.Kernel
	srv *cuse.Server
	ctx context.Context
}

func (d *devices) Register(name string, dev cuse.Device) (stream.Node, error) {
	n := &node{st: dev.(*stream.Stream), ctx: context.Background()}
	n.spy = &spyDevice{Stream: n.st}
	if d.cuse {
		dir := d.t.TempDir()
		k, err := fakekernel.New(fakekernel.Config{DevDir: dir})
		if err != nil {
			return nil, err
		}
		srv, err := cuse.NewServer(k.Channel(), n.spy, cuse.Options{Name: name,
			Node: cuse.NodeOptions{Dir: dir, SysClass: filepath.Join(dir, "sys")}, Logger: quietLogger()})
		if err != nil {
			k.Close()
			return nil, err
		}
		serve := make(chan error, 1)
		go func() { serve <- srv.Serve(context.Background()) }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := k.Init(ctx); err != nil {
			srv.Close()
			k.Close()
			return nil, err
		}
		select {
		case <-srv.Ready():
		case err := <-serve:
			k.Close()
			return nil, err
		}
		n.k, n.srv = k, srv
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[name] = n
	return n, nil
}

func (n *node) Unlink() {}
func (n *node) Close() {
	if n.srv != nil {
		n.srv.Close()
		n.k.Close()
	}
}

// spyDevice serves a stream and records where WRITE payloads were.
type spyDevice struct {
	*stream.Stream
	mu                  sync.Mutex
	lentBytes, copied   int // bytes Write took from lent buffers, from others
	mixed, lentWrites   int
	shortLent, lentFull int // lent WRITEs Write took part of, all of
}

func inside(mem, b []byte) bool {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= start && p+uintptr(len(b)) <= start+uintptr(len(mem))
}

func (d *spyDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	h, err := d.Stream.Open(ctx, req)
	if err != nil {
		return nil, err
	}
	return spyHandle{Handle: h, d: d}, nil
}

type spyHandle struct {
	cuse.Handle
	d *spyDevice
}

func (h spyHandle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	in := 0
	if pool := stream.LendPool(h.d.Stream); pool != nil {
		for _, b := range req.Data {
			if inside(pool.Memory(), b) {
				in++
			}
		}
	}
	n, err := h.Handle.Write(ctx, req)
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	switch in {
	case 0:
		h.d.copied += n
	case len(req.Data):
		h.d.lentBytes += n
		h.d.lentWrites++
		if n == req.Len() {
			h.d.lentFull++
		} else if n > 0 {
			h.d.shortLent++
		}
	default:
		h.d.mixed++
	}
	return n, err
}

type rig struct {
	h1, h2 *host.Host
	e1, e2 *emu.Host
	d1, d2 *devices
	unplug func()
	replug func()
}

var fast = xdomain.Timing{Timeout: 200 * time.Millisecond, Retries: 10, ShortTimeout: 5 * time.Millisecond, ChangedDelay: 5 * time.Millisecond}

func startHost(t *testing.T, name string, cuse bool) (*host.Host, *emu.Host, *devices) {
	e, err := emu.NewHost(emu.Config{Name: name, Logger: quietLogger()})
	require.NoError(t, err)
	d := &devices{t: t, cuse: cuse, m: map[string]*node{}}
	h, err := host.Start(host.Config{Name: name, Device: e, Devices: d, Timing: fast, Logger: quietLogger()})
	require.NoError(t, err)
	t.Cleanup(func() {
		h.Close()
		e.Close()
	})
	return h, e, d
}

// newRig joins host1 and host2 as in the documentation: host2 sees host1
// as 0-1, host1 sees host2 as 0-503.
func newRig(t *testing.T, cuse bool) *rig {
	r := &rig{}
	r.h1, r.e1, r.d1 = startHost(t, "host1", cuse)
	r.h2, r.e2, r.d2 = startHost(t, "host2", cuse)
	var mu sync.Mutex
	var cable interface{ Close() error }
	connect := func() {
		c, _, err := emu.ConnectInProcess(r.e1, emu.Port{Adapter: 3, PeerRoute: 0x503}, r.e2, emu.Port{Adapter: 1, PeerRoute: 0x1})
		require.NoError(t, err)
		mu.Lock()
		cable = c
		mu.Unlock()
		waitService(t, r.h2, 0x1)
		waitService(t, r.h1, 0x503)
	}
	r.unplug = func() {
		mu.Lock()
		defer mu.Unlock()
		cable.Close()
	}
	r.replug = connect
	connect()
	t.Cleanup(r.unplug)
	return r
}

func waitService(t *testing.T, h *host.Host, route ctl.Route) {
	t.Helper()
	require.Eventually(t, func() bool {
		xd := h.XDomain.XDomain(route)
		return xd != nil && !xd.Unplugged() && len(xd.Services()) > 0
	}, 10*time.Second, 5*time.Millisecond, "no stream service at %v", route)
}

func makeItem(t *testing.T, h *host.Host, group, name string, ringSize int) configfs.Item {
	t.Helper()
	id, err := xdomain.ParseServiceID(group)
	require.NoError(t, err)
	gn := configfs.GroupName{Name: group, Domain: id.Host.Domain, Route: uint64(id.Host.Route), Service: id.Index}
	ctx := context.Background()
	g, err := h.Streams.MakeGroup(ctx, gn)
	require.NoError(t, err)
	it, err := g.MakeItem(ctx, name)
	require.NoError(t, err)
	require.NoError(t, it.Store(ctx, configfs.AttrRingSize, int64(ringSize)))
	return it
}

// stream makes "zc" on both hosts (host2 picks the HopIDs, host1 takes
// them from its announcement) and returns host1's and host2's nodes.
func (r *rig) stream(t *testing.T, ringSize int) (n1, n2 *node) {
	ctx := context.Background()
	b2 := makeItem(t, r.h2, "0-1.0", "zc", ringSize)
	require.NoError(t, b2.Store(ctx, configfs.AttrInHopID, -1))
	require.NoError(t, b2.Store(ctx, configfs.AttrOutHopID, -1))
	b1 := makeItem(t, r.h1, "0-503.0", "zc", ringSize)
	require.Eventually(t, func() bool {
		in, _ := b1.Show(ctx, configfs.AttrInHopID)
		out, _ := b1.Show(ctx, configfs.AttrOutHopID)
		return in > 0 && out > 0
	}, 10*time.Second, 5*time.Millisecond, "host1 takes its HopIDs from host2's announcement")
	return r.d1.m["tbstream0"], r.d2.m["tbstream0"]
}

func info(t *testing.T, h *host.Host) stream.Info {
	t.Helper()
	g := h.Streams.Snapshot()
	require.Len(t, g, 1)
	require.Len(t, g[0].Streams, 1)
	return g[0].Streams[0]
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) ^ seed ^ byte(i>>12)
	}
	return p
}

// kernelWrite writes p through the fake kernel in WRITEs of at most
// 128 KiB, as the kernel splits a write(2), following short writes.
func kernelWrite(ctx context.Context, n *node, fh uint64, p []byte) error {
	for len(p) > 0 {
		k, err := n.k.Write(ctx, fh, p[:min(len(p), cuse.DefaultMaxIO)], 0)
		if err != nil {
			return err
		}
		p = p[k:]
	}
	return nil
}

// kernelRead reads until EOF (the writer's CLOSE).
func kernelRead(ctx context.Context, n *node, fh uint64) ([]byte, error) {
	var out bytes.Buffer
	for {
		b, err := n.k.Read(ctx, fh, cuse.DefaultMaxIO, 0)
		if err != nil {
			return out.Bytes(), err
		}
		if len(b) == 0 {
			return out.Bytes(), nil
		}
		out.Write(b)
	}
}

// TestCuseWriteLandsInTxBuffers: through a CUSE server, WRITE payloads
// are read into buffers of the stream's lend pool (their slices point
// into its DMA memory) and posted from there; the peer receives every
// byte in order; once the rings are stopped and the server is closed,
// every buffer is back in the pool.
func TestCuseWriteLandsInTxBuffers(t *testing.T) {
	r := newRig(t, true)
	n1, n2 := r.stream(t, stream.DefaultRingSize)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	rfh, err := n2.k.Open(ctx, syscall.O_RDONLY)
	require.NoError(t, err)
	got := make(chan []byte, 1)
	go func() {
		b, err := kernelRead(ctx, n2, rfh)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- b
	}()
	wfh, err := n1.k.Open(ctx, syscall.O_WRONLY)
	require.NoError(t, err)
	data := pattern(8<<20+1234, 1)
	require.NoError(t, kernelWrite(ctx, n1, wfh, data))
	pool := stream.LendPool(n1.st)
	require.NotNil(t, pool, "the first WRITE buffers lent allocated the pool")
	require.NoError(t, n1.k.Release(ctx, wfh))
	b := <-got
	require.Equal(t, sha256.Sum256(data), sha256.Sum256(b), "%d bytes in, %d out", len(data), len(b))
	require.NoError(t, n2.k.Release(ctx, rfh))

	spy := n1.spy
	spy.mu.Lock()
	require.Zero(t, spy.mixed, "a payload is in lent buffers or not at all")
	require.Equal(t, len(data), spy.lentBytes+spy.copied)
	require.Greater(t, spy.lentBytes, len(data)/2, "most payloads landed in lent TX buffers")
	lent := spy.lentBytes
	spy.mu.Unlock()
	in := info(t, r.h1)
	require.Equal(t, uint64(len(data)), in.TxBytes)
	require.Equal(t, uint64(lent), in.TxLentBytes, "every lent payload was posted from its buffers, not copied")

	// Rings stopped: what is not in a reader's hands is back.
	require.Eventually(t, func() bool {
		return pool.Stats().Free == pool.Size()-stream.Lendings(n1.st)*cuse.DefaultMaxIO/nhi.SlotSize
	}, 10*time.Second, time.Millisecond, "free %d of %d, %d lendings out", pool.Stats().Free, pool.Size(), stream.Lendings(n1.st))
	n1.srv.Close()
	require.Zero(t, stream.Lendings(n1.st), "a stopped server gave every lending back")
	require.Equal(t, pool.Size(), pool.Stats().Free, "pool accounting back to full")
	require.Empty(t, n1.k.Violations())
}

// TestCuseConcurrentWriters: two threads writing one descriptor through
// CUSE, each a sequence of 4 KiB records: every record arrives whole, once,
// and each writer's records in order.
func TestCuseConcurrentWriters(t *testing.T) {
	r := newRig(t, true)
	n1, n2 := r.stream(t, 64)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rfh, err := n2.k.Open(ctx, syscall.O_RDONLY)
	require.NoError(t, err)
	got := make(chan []byte, 1)
	go func() {
		b, err := kernelRead(ctx, n2, rfh)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- b
	}()
	wfh, err := n1.k.Open(ctx, syscall.O_WRONLY)
	require.NoError(t, err)
	const records = 1024 // per writer: 4 MiB
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, records*nhi.SlotSize)
			for seq := range records {
				rec := bytes.Repeat([]byte{byte(w + 1)}, nhi.SlotSize)
				binary.BigEndian.PutUint32(rec, uint32(seq))
				buf = append(buf, rec...)
			}
			// WRITEs of whole records (a record is a frame): short
			// writes end on frame boundaries too, and the next WRITE
			// continues there, so the writers' records never mix.
			for p, i := buf, 0; len(p) > 0; i++ {
				size := cuse.DefaultMaxIO
				if i%2 == 1 {
					size = 3 * nhi.SlotSize
				}
				k, err := n1.k.Write(ctx, wfh, p[:min(len(p), size)], 0)
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				p = p[k:]
			}
		}()
	}
	wg.Wait()
	require.NoError(t, n1.k.Release(ctx, wfh))
	b := <-got
	require.Len(t, b, 2*records*nhi.SlotSize)
	next := [2]uint32{}
	for off := 0; off < len(b); off += nhi.SlotSize {
		rec := b[off : off+nhi.SlotSize]
		w := int(rec[nhi.SlotSize-1]) - 1
		require.True(t, w == 0 || w == 1, "record at %d: writer byte %d", off, rec[nhi.SlotSize-1])
		require.Equal(t, next[w], binary.BigEndian.Uint32(rec), "writer %d's records in order, none lost or repeated", w)
		require.Equal(t, bytes.Repeat([]byte{byte(w + 1)}, nhi.SlotSize-4), rec[4:], "record at %d whole", off)
		next[w]++
	}
	n1.spy.mu.Lock()
	require.Positive(t, n1.spy.lentBytes, "writes were lent")
	n1.spy.mu.Unlock()
	require.NoError(t, n2.k.Release(ctx, rfh))
}

// lend asks st for one full-size lending as a CUSE reader would.
func lend(t *testing.T, st *stream.Stream) ([][]byte, func(int)) {
	t.Helper()
	bufs, done := st.WriteBuffer(cuse.DefaultMaxIO)
	require.NotNil(t, bufs)
	return bufs, done
}

// payload is what the server hands Write for n bytes read into bufs.
func payload(bufs [][]byte, n int) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n == 0 {
			break
		}
		k := min(n, len(b))
		out = append(out, b[:k])
		n -= k
	}
	return out
}

func writeReq(data [][]byte, nonblock bool) *cuse.WriteRequest {
	req := &cuse.WriteRequest{Data: data}
	if nonblock {
		req.Flags = syscall.O_NONBLOCK
	}
	return req
}

func readN(t *testing.T, h cuse.Handle, n int) []byte {
	t.Helper()
	var out []byte
	for len(out) < n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := h.Read(ctx, &cuse.ReadRequest{Size: n - len(out)})
		cancel()
		require.NoError(t, err)
		require.NotZero(t, res.Len(), "EOF after %d of %d bytes", len(out), n)
		for _, b := range res.Data {
			out = append(out, b...)
		}
		res.Done(true)
	}
	return out
}

// TestLendingLimits drives the WriteBufferer as a CUSE server would, on a
// ring of 32: no lending before a ring pair is open; a lent payload
// larger than the free descriptors is a short write of whole frames, the
// rest given back; a full ring is EAGAIN with O_NONBLOCK and the lending
// comes back whole; the pool lends until it is empty, then says nil, and
// the copy path still carries writes; everything comes back.
func TestLendingLimits(t *testing.T) {
	r := newRig(t, false)
	n1, n2 := r.stream(t, 32)
	st := n1.st
	ctx := context.Background()
	bufs, done := st.WriteBuffer(cuse.DefaultMaxIO)
	require.Nil(t, bufs, "no ring pair open: nothing to lend for")
	require.Nil(t, done)

	reader, err := n2.spy.Open(ctx, &cuse.OpenRequest{Flags: syscall.O_RDONLY, Wake: func() {}})
	require.NoError(t, err)
	writer, err := n1.spy.Open(ctx, &cuse.OpenRequest{Flags: syscall.O_WRONLY, Wake: func() {}})
	require.NoError(t, err)
	pool := stream.LendPool(st)
	require.Nil(t, pool, "allocated at the first lending")

	// A short write: 32 frames lent, 31 descriptors.
	bufs, done = lend(t, st)
	pool = stream.LendPool(st)
	require.Equal(t, stream.LendBuffers, pool.Size())
	data := pattern(cuse.DefaultMaxIO, 2)
	copy(bufs[0], data) // as readv would (one run: the pool is fresh)
	require.Len(t, bufs, 1)
	n, err := writer.Write(ctx, writeReq(payload(bufs, len(data)), false))
	require.NoError(t, err)
	require.Equal(t, 31*nhi.SlotSize, n, "the ring takes 31 frames")
	done(n)
	require.Equal(t, data[:n], readN(t, reader, n))
	require.Eventually(t, func() bool { return pool.Stats().Free == pool.Size() }, 10*time.Second, time.Millisecond,
		"the unposted buffer came back at once, the posted ones at completion")
	require.EqualValues(t, n, info(t, r.h1).TxLentBytes)

	// Fill the ring with nobody reading: 31 frames go to the peer's RX
	// ring, 31 wait for credits.
	for range 2 {
		bufs, done = lend(t, st)
		n, err := writer.Write(ctx, writeReq(payload(bufs, 31*nhi.SlotSize), false))
		require.NoError(t, err)
		require.Equal(t, 31*nhi.SlotSize, n)
		done(n)
	}
	bufs, done = lend(t, st)
	free := pool.Stats().Free
	_, err = writer.Write(ctx, writeReq(payload(bufs, 100), true))
	require.ErrorIs(t, err, syscall.EAGAIN, "ring full, O_NONBLOCK")
	done(0)
	require.Equal(t, free+32, pool.Stats().Free, "the refused lending came back whole")
	posted := pool.Size() - pool.Stats().Free
	require.Equal(t, 31, posted, "the 31 frames without credits hold their buffers")

	// Exhaust the pool: what it lends, then nil.
	var dones []func(int)
	for {
		b, d := st.WriteBuffer(cuse.DefaultMaxIO)
		if b == nil {
			break
		}
		dones = append(dones, d)
	}
	require.Len(t, dones, (pool.Size()-posted)/32)
	require.Less(t, pool.Stats().Free, 32)
	// The copy path carries a write meanwhile (the server's own buffer):
	// it waits for the reader to make room.
	got := make(chan []byte, 1)
	go func() { got <- readN(t, reader, 62*nhi.SlotSize+5) }()
	n, err = writer.Write(ctx, writeReq([][]byte{[]byte("hello")}, false))
	require.NoError(t, err)
	require.Equal(t, 5, n)
	require.Equal(t, []byte("hello"), (<-got)[62*nhi.SlotSize:])
	in := info(t, r.h1)
	require.EqualValues(t, 3*31*nhi.SlotSize+5, in.TxBytes)
	require.EqualValues(t, 3*31*nhi.SlotSize, in.TxLentBytes, "hello was copied")
	for _, d := range dones {
		d(0)
	}

	writer.Release(ctx)
	reader.Release(ctx)
	require.Eventually(t, func() bool { return pool.Stats().Free == pool.Size() }, 10*time.Second, time.Millisecond)
}

// TestLendingAcrossReplug: buffers lent and posted when the cable is
// pulled come back when the rings stop; a lending held across the unplug
// and re-plug carries a WRITE on the fresh ring pair without a copy (one
// pool per stream, valid for all its ring pairs); removing the stream
// closes the pool with every buffer back.
func TestLendingAcrossReplug(t *testing.T) {
	r := newRig(t, false)
	n1, n2 := r.stream(t, 32)
	st := n1.st
	ctx := context.Background()
	open := func(n *node, flags uint32) cuse.Handle {
		h, err := n.spy.Open(ctx, &cuse.OpenRequest{Flags: flags, Wake: func() {}})
		require.NoError(t, err)
		return h
	}
	reader, writer := open(n2, syscall.O_RDONLY), open(n1, syscall.O_WRONLY)
	for range 2 { // the second batch waits for credits
		bufs, done := lend(t, st)
		n, err := writer.Write(ctx, writeReq(payload(bufs, 31*nhi.SlotSize), false))
		require.NoError(t, err)
		require.Equal(t, 31*nhi.SlotSize, n)
		done(n)
	}
	pool := stream.LendPool(st)
	held, heldDone := lend(t, st) // a reader waiting for a request
	bufs, done := lend(t, st)     // the reader of the WRITE the unplug fails
	require.Equal(t, pool.Size()-31-2*32, pool.Stats().Free)

	r.unplug()
	_, err := writer.Write(ctx, writeReq(payload(bufs, 10), false))
	require.ErrorIs(t, err, syscall.ENXIO)
	done(0)
	writer.Release(ctx)
	reader.Release(ctx)
	require.Eventually(t, func() bool { return pool.Stats().Free == pool.Size()-32 }, 10*time.Second, time.Millisecond,
		"the stopped TX ring gave its posted buffers back; the held lending is still out")

	r.replug()
	require.Eventually(t, func() bool {
		in := info(t, r.h1)
		return in.InHopID > 0 && in.OutHopID > 0
	}, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		in := info(t, r.h2)
		return in.InHopID > 0 && in.OutHopID > 0
	}, 10*time.Second, 5*time.Millisecond)
	reader, writer = open(n2, syscall.O_RDONLY), open(n1, syscall.O_WRONLY)
	lentBefore := info(t, r.h1).TxLentBytes
	copy(held[0], "after the re-plug")
	n, err := writer.Write(ctx, writeReq(payload(held, 17), false))
	require.NoError(t, err)
	require.Equal(t, 17, n)
	heldDone(n)
	require.Equal(t, []byte("after the re-plug"), readN(t, reader, 17))
	require.Equal(t, lentBefore+17, info(t, r.h1).TxLentBytes, "posted from the lending, on the new rings")
	writer.Release(ctx)
	reader.Release(ctx)

	require.Eventually(t, func() bool { return pool.Stats().Free == pool.Size() }, 10*time.Second, time.Millisecond)
	require.NoError(t, st.Remove(ctx))
	require.Nil(t, stream.LendPool(st), "the pool closed with the stream")
	bufs, _ = st.WriteBuffer(cuse.DefaultMaxIO)
	require.Nil(t, bufs, "a finished stream lends nothing")
}
