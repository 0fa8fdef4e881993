package host

import (
	"context"
	"crypto/sha256"
	"errors"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/configfs"
	"tbstream/cuse"
	"tbstream/nhi/emu"
)

// pairStream makes "name" on both hosts with automatic HopIDs on host2 and
// announced ones on host1, and waits until both are usable.
func pairStream(t *testing.T, h1, h2 *testHost, name string) (i1, i2 configfs.Item) {
	t.Helper()
	i2 = mkItemIn(t, h2, "0-1.0", name)
	ctx := context.Background()
	require.NoError(t, i2.Store(ctx, configfs.AttrInHopID, -1))
	require.NoError(t, i2.Store(ctx, configfs.AttrOutHopID, -1))
	i1 = mkItemIn(t, h1, "0-503.0", name)
	require.Eventually(t, func() bool {
		return show(t, i1, configfs.AttrInHopID) >= 8 && show(t, i1, configfs.AttrOutHopID) >= 8
	}, 10*time.Second, 5*time.Millisecond)
	return i1, i2
}

// mkItemIn is mkItem for a group that may exist already.
func mkItemIn(t *testing.T, h *testHost, group, name string) configfs.Item {
	t.Helper()
	gn := groupName(t, group)
	ctx := context.Background()
	g, err := h.Streams.MakeGroup(ctx, gn)
	if errors.Is(err, syscall.EEXIST) {
		g = h.Streams.GroupFor(group)
		err = nil
	}
	require.NoError(t, err)
	it, err := g.MakeItem(ctx, name)
	require.NoError(t, err)
	return it
}

// pairSmallStream is pairStream with rings of 32 on both hosts, which a
// test fills quickly.
func pairSmallStream(t *testing.T, h1, h2 *testHost, name string) (i1, i2 configfs.Item) {
	t.Helper()
	i1, i2 = pairStream(t, h1, h2, name)
	ctx := context.Background()
	require.NoError(t, i1.Store(ctx, configfs.AttrRingSize, 32))
	require.NoError(t, i2.Store(ctx, configfs.AttrRingSize, 32))
	return i1, i2
}

// writeUntilFull writes data with non-blocking writes of 64 KiB until
// EAGAIN (the rings are full: nobody reads) or the end, and returns the
// bytes written.
func writeUntilFull(t *testing.T, w cuse.Handle, data []byte) int {
	t.Helper()
	sent := 0
	for sent < len(data) {
		n, err := w.Write(context.Background(), &cuse.WriteRequest{Data: [][]byte{data[sent:min(len(data), sent+64<<10)]}, Flags: syscall.O_NONBLOCK})
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		require.NoError(t, err)
		sent += n
	}
	return sent
}

func node(t *testing.T, it configfs.Item) string {
	return "tbstream" + strconv.FormatInt(show(t, it, configfs.AttrIndex), 10)
}

func TestTwoStreamsBothDirections(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	a1, a2 := pairStream(t, h1, h2, "a")
	b1, b2 := pairStream(t, h1, h2, "b")
	require.NotEqual(t, show(t, a2, configfs.AttrInHopID), show(t, b2, configfs.AttrInHopID))

	var wg sync.WaitGroup
	check := func(from, to *testHost, fi, ti configfs.Item, seed uint64) {
		defer wg.Done()
		r := open(t, to, node(t, ti), syscall.O_RDONLY)
		w := open(t, from, node(t, fi), syscall.O_WRONLY)
		data := make([]byte, 3<<20+77)
		fill(data, seed)
		got := make(chan []byte, 1)
		errc := make(chan error, 1)
		go func() { b, err := readToEOF(r); got <- b; errc <- err }()
		writeAll(t, w, data)
		w.Release(context.Background())
		b := <-got
		require.NoError(t, <-errc)
		require.Equal(t, sha256.Sum256(data), sha256.Sum256(b))
		r.Release(context.Background())
	}
	wg.Add(2)
	go check(h1, h2, a1, a2, 7) // a: host1 → host2
	go check(h2, h1, b2, b1, 9) // b: host2 → host1
	wg.Wait()
}

func TestOpenErrors(t *testing.T) {
	h1, h2, unplug := twoHosts(t)
	ctx := context.Background()

	// No HopIDs: EINVAL at once, blocking or not.
	mkItem(t, h2, "0-1.0", "nohop")
	d := h2.nodes.get("tbstream0")
	_, err := d.Open(ctx, &cuse.OpenRequest{Wake: func() {}})
	require.ErrorIs(t, err, syscall.EINVAL)

	// A group with no peer: ENXIO with O_NONBLOCK; a blocking open waits
	// until the stream attaches.
	gn := groupName(t, "0-7.0")
	g, err := h2.Streams.MakeGroup(ctx, gn)
	require.NoError(t, err)
	lonely, err := g.MakeItem(ctx, "x")
	require.NoError(t, err)
	require.NoError(t, lonely.Store(ctx, configfs.AttrInHopID, 8), "unattached: stored without validation")
	require.NoError(t, lonely.Store(ctx, configfs.AttrOutHopID, 99))
	require.Equal(t, int64(99), show(t, lonely, configfs.AttrOutHopID))
	ld := h2.nodes.get("tbstream1")
	_, err = ld.Open(ctx, &cuse.OpenRequest{Flags: syscall.O_NONBLOCK, Wake: func() {}})
	require.ErrorIs(t, err, syscall.ENXIO)
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = ld.Open(cctx, &cuse.OpenRequest{Wake: func() {}})
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "a blocking open waits for the peer")

	// An open stream whose peer goes away: ENXIO, HUP|ERR.
	i1, i2 := pairStream(t, h1, h2, "s")
	hd := open(t, h2, node(t, i2), syscall.O_RDWR)
	unplug()
	require.Eventually(t, func() bool { return h2.XDomain.XDomain(0x1) == nil }, 10*time.Second, 5*time.Millisecond)
	_, err = hd.Read(ctx, &cuse.ReadRequest{Size: 10})
	require.ErrorIs(t, err, syscall.ENXIO, "read after unplug")
	_, err = hd.Write(ctx, &cuse.WriteRequest{Data: [][]byte{{1}}})
	require.ErrorIs(t, err, syscall.ENXIO, "write after unplug")
	ev, err := hd.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn | cuse.EventOut})
	require.NoError(t, err)
	require.Equal(t, cuse.EventHup|cuse.EventErr, ev)
	require.Equal(t, int64(-1), show(t, i2, configfs.AttrInHopID), "after detach the attribute shows what was written, not the released HopID")
	require.Eventually(t, func() bool { return show(t, i1, configfs.AttrInHopID) == 0 }, 10*time.Second, 5*time.Millisecond,
		"host1 sees the unplug too: the announced HopIDs are released and not shown")
	hd.Release(ctx)
}

func TestAttributeErrors(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	ctx := context.Background()
	i1, i2 := pairStream(t, h1, h2, "s")

	other := mkItemIn(t, h2, "0-1.0", "t")
	in := show(t, i2, configfs.AttrInHopID)
	require.ErrorIs(t, other.Store(ctx, configfs.AttrInHopID, in), syscall.EBUSY, "taken by another stream")
	require.ErrorIs(t, other.Store(ctx, configfs.AttrInHopID, 7), syscall.EINVAL, "below 8")
	require.ErrorIs(t, other.Store(ctx, configfs.AttrInHopID, 20), syscall.EINVAL, "above the lane adapter's 19")
	require.ErrorIs(t, other.Store(ctx, configfs.AttrOutHopID, 20), syscall.EINVAL, "above the peer's maxhopid 19")
	for i := 0; i < 11; i++ { // 8..19 is 12 HopIDs; "s" holds one
		require.NoError(t, other.Store(ctx, configfs.AttrInHopID, -1))
		other = mkItemIn(t, h2, "0-1.0", "x"+strconv.Itoa(i))
	}
	require.ErrorIs(t, other.Store(ctx, configfs.AttrInHopID, -1), syscall.ENOSPC)

	hd := open(t, h1, node(t, i1), syscall.O_RDWR)
	for _, a := range []configfs.Attr{configfs.AttrInHopID, configfs.AttrOutHopID, configfs.AttrRingSize, configfs.AttrThrottling, configfs.AttrBusyPoll} {
		require.ErrorIs(t, i1.Store(ctx, a, 8), syscall.EBUSY, "attribute %v while open", a)
	}
	hd.Release(ctx)
	require.NoError(t, i1.Store(ctx, configfs.AttrRingSize, 64))
}

func TestCloseAndRemove(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	ctx := context.Background()
	i1, i2 := pairStream(t, h1, h2, "s")

	r := open(t, h2, node(t, i2), syscall.O_RDWR)
	w := open(t, h1, node(t, i1), syscall.O_RDWR)
	writeAll(t, w, []byte("hello"))
	w.Release(ctx) // CLOSE
	require.Equal(t, []byte("hello"), readAll(t, r), "data, then EOF")
	_, err := r.Write(ctx, &cuse.WriteRequest{Data: [][]byte{{1}}})
	require.ErrorIs(t, err, syscall.ENXIO, "write after the peer's CLOSE")
	r.Release(ctx)

	// rmdir while open: read EOF (poll says readable: a reader woken by
	// it must find the EOF), write ENXIO, the node is gone.
	r = open(t, h2, node(t, i2), syscall.O_RDWR)
	ev, err := r.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn})
	require.NoError(t, err)
	require.Zero(t, ev&cuse.EventIn, "nothing to read yet")
	require.NoError(t, i2.Remove(ctx))
	require.Nil(t, h2.nodes.get("tbstream0"))
	ev, err = r.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn})
	require.NoError(t, err)
	require.NotZero(t, ev&cuse.EventIn, "end of file is readable")
	res, err := r.Read(ctx, &cuse.ReadRequest{Size: 10})
	require.NoError(t, err)
	require.Zero(t, res.Len())
	_, err = r.Write(ctx, &cuse.WriteRequest{Data: [][]byte{{1}}})
	require.ErrorIs(t, err, syscall.ENXIO)
	r.Release(ctx)

	// rmdir of both items and groups: the next mkdir gets index 0.
	require.NoError(t, i1.Remove(ctx))
	require.NoError(t, h1.Streams.GroupFor("0-503.0").Remove(ctx))
	require.NoError(t, h2.Streams.GroupFor("0-1.0").Remove(ctx))
	it := mkItemIn(t, h2, "0-1.0", "again")
	require.Equal(t, int64(0), show(t, it, configfs.AttrIndex))
}

func TestSlowReaderStallsWriterWithoutLoss(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	ctx := context.Background()
	i1, i2 := pairSmallStream(t, h1, h2, "s")

	r := open(t, h2, node(t, i2), syscall.O_RDONLY)
	w := open(t, h1, node(t, i1), syscall.O_WRONLY)
	data := make([]byte, 4096*200)
	fill(data, 3)
	// Nobody reads: writes succeed until both rings are full, then a
	// non-blocking write is EAGAIN.
	sent := writeUntilFull(t, w, data)
	require.Less(t, sent, len(data), "the writer stalls")
	require.LessOrEqual(t, sent, 2*31*4096, "at most a TX ring and an RX ring of frames are in flight")
	res, err := r.Read(ctx, &cuse.ReadRequest{Size: 10, Flags: syscall.O_NONBLOCK})
	require.NoError(t, err, "data is waiting")
	require.Equal(t, data[:10], res.Data[0])
	res.Done(true)

	got := make(chan []byte)
	go func() { got <- readAll(t, r) }()
	writeAll(t, w, data[sent:])
	w.Release(ctx)
	out := <-got
	require.Equal(t, sha256.Sum256(data[10:]), sha256.Sum256(out), "nothing lost: everything after the 10 bytes read first")
	r.Release(ctx)
}

// TestReplugReattaches unplugs the cable and plugs it in again: both
// streams re-attach without a new mkdir — host2 asks again for what was
// written (-1), host1 takes host2's fresh announcement — and data flows.
func TestReplugReattaches(t *testing.T) {
	h1, h2, unplug := twoHosts(t)
	i1, i2 := pairStream(t, h1, h2, "s")
	unplug()
	require.Eventually(t, func() bool {
		return show(t, i1, configfs.AttrOutHopID) == 0 && show(t, i2, configfs.AttrInHopID) == -1
	}, 10*time.Second, 5*time.Millisecond, "detached on both sides")

	c1, _, err := emu.ConnectInProcess(h1.emu, emu.Port{Adapter: 3, PeerRoute: 0x503}, h2.emu, emu.Port{Adapter: 1, PeerRoute: 0x1})
	require.NoError(t, err)
	t.Cleanup(func() { c1.Close() })
	require.Eventually(t, func() bool {
		return show(t, i2, configfs.AttrInHopID) >= 8 && show(t, i1, configfs.AttrInHopID) >= 8
	}, 10*time.Second, 5*time.Millisecond, "re-attached with HopIDs on both sides")

	sendOnce(t, h1, i1, h2, i2, "after replug")
}

// sendOnce opens stream i1 on h1 and i2 on h2, sends msg from h1 to h2
// and closes both: it must arrive whole, then EOF.
func sendOnce(t *testing.T, h1 *testHost, i1 configfs.Item, h2 *testHost, i2 configfs.Item, msg string) {
	t.Helper()
	ctx := context.Background()
	r := open(t, h2, node(t, i2), syscall.O_RDONLY)
	w := open(t, h1, node(t, i1), syscall.O_WRONLY)
	writeAll(t, w, []byte(msg))
	w.Release(ctx)
	require.Equal(t, []byte(msg), readAll(t, r))
	r.Release(ctx)
}

// stuckClose closes w after filling both rings (nobody reads the peer,
// whose RX ring fills, then w's TX ring; both rings of 32), so that the
// close waits (flushIdle) for frames that cannot leave; closed is closed
// when it has returned.
func stuckClose(t *testing.T, w cuse.Handle) (closed chan struct{}) {
	t.Helper()
	ctx := context.Background()
	payload := make([]byte, 64*4096)
	for range 2 {
		n, err := w.Write(ctx, &cuse.WriteRequest{Data: [][]byte{payload}})
		require.NoError(t, err)
		require.Positive(t, n)
	}
	closed = make(chan struct{})
	go func() {
		w.Release(ctx)
		close(closed)
	}()
	return closed
}

// TestCloseWithFullRingSendsClose: a last close right after writes that
// filled the TX ring (the peer has the device open but has not read yet)
// waits for a free slot for the CLOSE frame, so the reader, once it reads,
// gets every byte and then EOF. Linux posts the CLOSE only if a slot is
// free at close; otherwise the frame is lost and the reader blocks until
// its own close.
func TestCloseWithFullRingSendsClose(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	ctx := context.Background()
	i1, i2 := pairSmallStream(t, h1, h2, "full")
	r := open(t, h2, node(t, i2), syscall.O_RDONLY)
	defer r.Release(ctx)
	w := open(t, h1, node(t, i1), syscall.O_WRONLY)
	// Writes until EAGAIN: host2's RX ring is full, then host1's TX ring.
	data := make([]byte, 4096*200)
	fill(data, 5)
	sent := data[:writeUntilFull(t, w, data)]
	require.Less(t, len(sent), len(data), "the rings are full")
	closed := make(chan struct{})
	go func() {
		w.Release(ctx)
		close(closed)
	}()
	// The release finds the ring full before anything is read.
	time.Sleep(100 * time.Millisecond)
	got := readAll(t, r)
	require.Equal(t, len(sent), len(got), "bytes before EOF")
	require.Equal(t, sha256.Sum256(sent), sha256.Sum256(got))
	<-closed
}

// TestRemoveWhileClosing: an rmdir while the last close is still taking
// the rings and paths down must leave the HopIDs and the index taken
// until the close is done; a stream that got them at once found its
// HopIDs still routed and failed to open with EIO.
func TestRemoveWhileClosing(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	ctx := context.Background()
	i1, i2 := pairSmallStream(t, h1, h2, "a")
	in, out := show(t, i1, configfs.AttrInHopID), show(t, i1, configfs.AttrOutHopID)
	r := open(t, h2, node(t, i2), syscall.O_RDWR)
	defer r.Release(ctx)
	closed := stuckClose(t, open(t, h1, node(t, i1), syscall.O_RDWR))
	xd := waitService(t, h1, 0x503)
	require.NoError(t, i1.Remove(ctx))
	select {
	case <-closed:
		t.Fatal("the close did not wait for the stuck frames (flushIdle)")
	default:
	}
	require.True(t, xd.HopIDs.In.InUse(int(in)), "in_hopid %d kept while closing", in)
	require.True(t, xd.HopIDs.Out.InUse(int(out)), "out_hopid %d kept while closing", out)
	again := mkItemIn(t, h1, "0-503.0", "b")
	require.Equal(t, int64(1), show(t, again, configfs.AttrIndex), "index 0 still taken")
	<-closed
	require.False(t, xd.HopIDs.In.InUse(int(in)), "released when the close is done")
	require.False(t, xd.HopIDs.Out.InUse(int(out)))
	require.NoError(t, again.Remove(ctx))
	require.Equal(t, int64(0), show(t, mkItemIn(t, h1, "0-503.0", "c"), configfs.AttrIndex))
}

// TestHopIDsRetakenWhenFreed: host2 reuses the HopIDs of a stream whose
// close on host1 is still stopping; host1's new stream cannot take them
// from the announcement yet, and must once the old one lets them go.
func TestHopIDsRetakenWhenFreed(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	ctx := context.Background()
	i1, i2 := pairSmallStream(t, h1, h2, "a")
	r := open(t, h2, node(t, i2), syscall.O_RDWR)
	closed := stuckClose(t, open(t, h1, node(t, i1), syscall.O_RDWR))
	require.NoError(t, i1.Remove(ctx))
	// host2 frees its HopIDs and gives them to "b"; host1's "b" wants
	// them while "a" still holds them.
	r.Release(ctx)
	require.NoError(t, i2.Remove(ctx))
	b2 := mkItemIn(t, h2, "0-1.0", "b")
	require.NoError(t, b2.Store(ctx, configfs.AttrInHopID, -1))
	require.NoError(t, b2.Store(ctx, configfs.AttrOutHopID, -1))
	b1 := mkItemIn(t, h1, "0-503.0", "b")
	<-closed
	require.Eventually(t, func() bool {
		return show(t, b1, configfs.AttrInHopID) == show(t, b2, configfs.AttrOutHopID) &&
			show(t, b1, configfs.AttrOutHopID) == show(t, b2, configfs.AttrInHopID) &&
			show(t, b1, configfs.AttrInHopID) >= 8
	}, 10*time.Second, 5*time.Millisecond, "host1's b takes host2's HopIDs once a frees them")
	sendOnce(t, h1, b1, h2, b2, "after")
}
