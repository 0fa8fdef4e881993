package host

// Session boundaries (see the stream package doc, "Sessions"): a byte is
// delivered once, in order, to the session it was written for, or the
// writer is told. Each test here is one of the ways users end sessions
// early, run many times; releases run on their own goroutines, as FUSE and
// CUSE send RELEASE after the process has gone.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/configfs"
	"tbstream/cuse"
)

// readN reads from hd until it has n bytes or EOF, as `head -c n` does.
func readN(hd cuse.Handle, n int) ([]byte, error) {
	var out []byte
	for len(out) < n {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		res, err := hd.Read(ctx, &cuse.ReadRequest{Size: n - len(out)})
		cancel()
		if err != nil {
			return out, fmt.Errorf("read after %d bytes: %w", len(out), err)
		}
		k := res.Len()
		for _, b := range res.Data {
			out = append(out, b...)
		}
		if res.Done != nil {
			res.Done(true)
		}
		if k == 0 {
			break
		}
	}
	return out, nil
}

// openNode opens node of h, waiting for the peer like a blocking open.
func openNode(t *testing.T, h *testHost, it configfs.Item, flags uint32) cuse.Handle {
	t.Helper()
	d := h.nodes.get(node(t, it))
	require.NotNil(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	hd, err := d.Open(ctx, &cuse.OpenRequest{Flags: flags, Wake: func() {}})
	require.NoError(t, err)
	return hd
}

// closeLater is close(2) through the FUSE fallback: FLUSH (its error is
// close(2)'s, which `>` and most programs ignore), and RELEASE after the
// process has gone, on its own goroutine; the returned channel closes
// when the release is done.
func closeLater(hd cuse.Handle) <-chan struct{} {
	if f, ok := hd.(cuse.Flusher); ok {
		_ = f.Flush(context.Background())
	}
	return releaseLater(hd)
}

// releaseLater releases hd on its own goroutine, as RELEASE comes after
// the process has gone; the returned channel closes when it is done.
func releaseLater(hd cuse.Handle) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		hd.Release(context.Background())
		close(ch)
	}()
	return ch
}

// nextSession is the session after an ended one: a new reader on host2
// and writer on host1, the writer sending size bytes and closing with end
// (closeLater or releaseLater). The reader must get them, then EOF.
func nextSession(t *testing.T, h1, h2 *testHost, i1, i2 configfs.Item, size, round int, end func(cuse.Handle) <-chan struct{}) {
	t.Helper()
	want := make([]byte, size)
	fill(want, uint64(round))
	r := openNode(t, h2, i2, syscall.O_RDONLY)
	got := make(chan []byte, 1)
	go func() { b, _ := readToEOF(r); got <- b }()
	w := openNode(t, h1, i1, syscall.O_WRONLY)
	writeAll(t, w, want)
	<-end(w)
	b := <-got
	require.True(t, bytes.Equal(want, b), "round %d: the new reader got %d bytes, want %d (first %x)", round, len(b), len(want), b[:min(len(b), 8)])
	<-end(r)
}

// writeBlocked writes p until a write fails and returns that error: the
// writer of a stream whose reader has gone.
func writeBlocked(w cuse.Handle, p []byte) (int, error) {
	sent := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		n, err := w.Write(ctx, &cuse.WriteRequest{Data: [][]byte{p}})
		cancel()
		sent += n
		if err != nil {
			return sent, err
		}
	}
}

// A writer whose peer's reader closes learns it without reading: its write
// (blocked for credits, or the next one) fails with ENXIO, and what it had
// queued is counted as undelivered.
func TestWriterSeesReaderLeave(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	i1, i2 := pairSmallStream(t, h1, h2, "w")
	for round := range 20 {
		r := openNode(t, h2, i2, syscall.O_RDONLY)
		w := openNode(t, h1, i1, syscall.O_WRONLY)
		p := bytes.Repeat([]byte{byte(round)}, 64<<10)
		errc := make(chan error, 1)
		go func() { _, err := writeBlocked(w, p); errc <- err }()
		got, err := readN(r, 10)
		require.NoError(t, err, "round %d", round)
		require.Equal(t, p[:10], got, "round %d", round)
		<-closeLater(r)
		require.ErrorIs(t, <-errc, syscall.ENXIO, "round %d: the writer after its reader left", round)
		<-closeLater(w)
	}
	// What the writers had queued went nowhere: discarded by host1 once it
	// saw the reader's CLOSE (undelivered), or, what left before, by
	// host2's closing session (rx_discarded).
	lost := infoOf(t, h1, "0-503.0", "w").Undelivered + infoOf(t, h2, "0-1.0", "w").RxDiscarded
	require.Positive(t, lost, "the writers' queued bytes are counted")
}

// A writer blocked for credits is killed (its write interrupted) just as
// its reader leaves, and a new session starts at once: the new reader
// gets the new writer's bytes and EOF, nothing of the old session.
func TestKilledWriterThenNewSession(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	i1, i2 := pairSmallStream(t, h1, h2, "k")
	for round := range 30 {
		r := openNode(t, h2, i2, syscall.O_RDONLY)
		w := openNode(t, h1, i1, syscall.O_WRONLY)
		old := bytes.Repeat([]byte{0xee}, 64<<10)
		ctx, kill := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			for ctx.Err() == nil {
				if _, err := w.Write(ctx, &cuse.WriteRequest{Data: [][]byte{old}}); err != nil {
					return
				}
			}
		}()
		_, err := readN(r, 10)
		require.NoError(t, err)
		rDone := closeLater(r)
		if round%2 == 1 {
			time.Sleep(time.Millisecond) // sometimes the writer sees ENXIO first
		}
		kill()
		<-stopped
		wDone := closeLater(w)

		nextSession(t, h1, h2, i1, i2, 200<<10+round, round, closeLater)
		<-rDone
		<-wDone
	}
}

// Both ends close, the writer first (as CUSE releases them: no FLUSH),
// with frames queued that the reader, which holds the node and reads
// nothing, never took; the reader closes while the writer's close waits
// for them to leave. Each end's CLOSE crosses the other's, and each is the
// other's end of the session. The next session gets its own bytes.
func TestBothEndsCloseAtOnce(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	i1, i2 := pairStream(t, h1, h2, "x")
	// Large rings: the writer's queue takes a while to drain into the
	// reader's closing session, and its own CLOSE comes last.
	for _, it := range []configfs.Item{i1, i2} {
		require.NoError(t, it.Store(context.Background(), configfs.AttrRingSize, 4096))
	}
	stale := bytes.Repeat([]byte{0xee}, 40<<20)
	for round := range 20 {
		r := openNode(t, h2, i2, syscall.O_RDONLY)
		w := openNode(t, h1, i1, syscall.O_WRONLY)
		require.Less(t, writeUntilFull(t, w, stale), len(stale), "the rings are full")
		wDone := releaseLater(w)
		require.Eventually(t, func() bool { return infoOf(t, h1, "0-503.0", "x").State == "closing" }, hangGuard, time.Millisecond)
		<-releaseLater(r)
		<-wDone

		nextSession(t, h1, h2, i1, i2, 100<<10+round, round, releaseLater)
	}
}

// Back-to-back short sessions, as `head -c 10 /dev/tbstream0` against
// `printf 'msg…' > /dev/tbstream0` in a loop: every reader gets the start
// of its own message.
func TestBackToBackShortSessions(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	i1, i2 := pairStream(t, h1, h2, "b2b")
	var pending []<-chan struct{}
	for round := range 300 {
		msg := []byte(fmt.Sprintf("message %04d of the back-to-back run\n", round))
		r := openNode(t, h2, i2, syscall.O_RDONLY)
		w := openNode(t, h1, i1, syscall.O_WRONLY)
		writeAll(t, w, msg)
		pending = append(pending, closeLater(w))
		got, err := readN(r, 10)
		pending = append(pending, closeLater(r))
		require.NoError(t, err, "round %d", round)
		require.Equal(t, string(msg[:10]), string(got), "round %d", round)
	}
	for _, ch := range pending {
		<-ch
	}
}

// A writer sends 96 KiB and closes while its reader reads 10 bytes and
// closes, both releases still running when a new reader and writer open
// the stream: the new writer's 8 KiB arrive, then EOF.
func TestNewSessionWhileOldReleasesRun(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	i1, i2 := pairStream(t, h1, h2, "o")
	for round := range 30 {
		r := openNode(t, h2, i2, syscall.O_RDONLY)
		w := openNode(t, h1, i1, syscall.O_WRONLY)
		writeAll(t, w, bytes.Repeat([]byte{0xaa}, 96<<10))
		wDone := closeLater(w)
		_, err := readN(r, 10)
		require.NoError(t, err)
		rDone := closeLater(r)

		want := make([]byte, 8<<10)
		fill(want, uint64(round+100))
		r2 := openNode(t, h2, i2, syscall.O_RDONLY)
		got := make(chan []byte, 1)
		errc := make(chan error, 1)
		go func() { b, err := readToEOF(r2); got <- b; errc <- err }()
		w2 := openNode(t, h1, i1, syscall.O_WRONLY)
		writeAll(t, w2, want)
		<-closeLater(w2)
		b := <-got
		require.NoError(t, <-errc)
		require.True(t, bytes.Equal(want, b), "round %d: the new reader got %d of %d bytes", round, len(b), len(want))
		<-closeLater(r2)
		<-wDone
		<-rDone
	}
}

var _ = errors.Is

// The stream's state names the session in progress: "closed by peer"
// while a reader that met the peer's CLOSE still holds the node, "ready"
// once the session is over, for the next one.
func TestStateAfterSession(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	i1, i2 := pairSmallStream(t, h1, h2, "st")
	r := openNode(t, h2, i2, syscall.O_RDONLY)
	w := openNode(t, h1, i1, syscall.O_WRONLY)
	writeAll(t, w, []byte("one session"))
	<-closeLater(w)
	got, err := readToEOF(r)
	require.NoError(t, err)
	require.Equal(t, "one session", string(got))
	require.Equal(t, "closed by peer", infoOf(t, h2, "0-1.0", "st").State, "the reader at EOF, node still open")
	<-closeLater(r)
	require.Eventually(t, func() bool { return infoOf(t, h2, "0-1.0", "st").State == "ready" }, hangGuard, time.Millisecond,
		"after the session's last close")
}
