package host

import (
	"bytes"
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/configfs"
	"tbstream/cuse"
)

// TestNextSessionWhileReaderCloses runs transfers back to back over one
// stream pair, as `dd` does twice in a row: each reader opens first, and
// its close (which FUSE sends after the process has gone, asynchronously)
// may still be running when the next reader opens and the next writer
// writes. Every transfer must arrive whole, then EOF: no frame of the next
// session may land in the closing ring pair, and no CLOSE of the closing
// reader may reach the next session.
func TestNextSessionWhileReaderCloses(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	i1, i2 := pairStream(t, h1, h2, "rep")
	ctx := context.Background()
	type result struct {
		data     []byte
		err      error
		released <-chan struct{}
	}
	var released <-chan struct{}
	for round := range 4 {
		data := make([]byte, 2<<20)
		fill(data, uint64(round))
		got := make(chan result, 1)
		opened := make(chan struct{})
		go func() {
			d := h2.nodes.get(node(t, i2))
			r, err := d.Open(ctx, &cuse.OpenRequest{Flags: syscall.O_RDONLY, Wake: func() {}})
			close(opened)
			if err != nil {
				got <- result{err: err}
				return
			}
			b, err := readToEOF(r)
			done := make(chan struct{})
			go func() { r.Release(ctx); close(done) }() // as FUSE's RELEASE: after the reader has gone
			got <- result{b, err, done}
		}()
		// The writer starts once the reader is in open(2): done, or
		// waiting for the last round's close to finish.
		require.Eventually(t, func() bool {
			select {
			case <-opened:
				return true
			default:
				return infoOf(t, h2, "0-1.0", "rep").Waiting > 0
			}
		}, 10*time.Second, time.Millisecond, "round %d: host2's open", round)
		w := open(t, h1, node(t, i1), syscall.O_RDWR)
		writeAll(t, w, data)
		// The reader sends nothing; in particular no CLOSE of the last
		// round's reader may reach this session (it would read as EOF).
		_, err := w.Read(ctx, &cuse.ReadRequest{Size: 4096, Flags: syscall.O_NONBLOCK})
		require.ErrorIs(t, err, syscall.EAGAIN, "round %d: host1's read", round)
		w.Release(ctx)
		res := <-got
		require.NoError(t, res.err, "round %d: host2's reader", round)
		released = res.released
		require.True(t, bytes.Equal(data, res.data), "round %d: %d of %d bytes received, or not in order", round, len(res.data), len(data))
	}
	<-released
}

// TestHopIDsFreedAfterGroupRemoved: a stream removed with its group
// (rmdir -p) while still open holds its HopIDs until its close; a stream
// of the group made again meanwhile, which wants the same HopIDs from the
// peer's announcement, gets them at that close.
func TestHopIDsFreedAfterGroupRemoved(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	ctx := context.Background()
	i1, i2 := pairStream(t, h1, h2, "s")
	w := open(t, h1, node(t, i1), syscall.O_WRONLY)
	require.NoError(t, i1.Remove(ctx))
	require.NoError(t, h1.Streams.GroupFor("0-503.0").Remove(ctx))
	require.NoError(t, i2.Remove(ctx))

	// host2 announces u on the HopIDs s had; host1's s still holds them.
	u2 := mkItemIn(t, h2, "0-1.0", "u")
	require.NoError(t, u2.Store(ctx, configfs.AttrInHopID, -1))
	require.NoError(t, u2.Store(ctx, configfs.AttrOutHopID, -1))
	u1 := mkItemIn(t, h1, "0-503.0", "u")
	time.Sleep(100 * time.Millisecond) // the announcement arrives, the allocation fails
	w.Release(ctx)
	require.Eventually(t, func() bool {
		return show(t, u1, configfs.AttrInHopID) >= 8 && show(t, u1, configfs.AttrOutHopID) >= 8
	}, 10*time.Second, 5*time.Millisecond, "u on host1: HopIDs %d/%d", show(t, u1, configfs.AttrInHopID), show(t, u1, configfs.AttrOutHopID))
}
