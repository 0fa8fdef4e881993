package loopback

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
)

func open(t *testing.T, p *Pipe, flags uint32, wakes *atomic.Int32) cuse.Handle {
	t.Helper()
	h, err := p.Open(context.Background(), &cuse.OpenRequest{Flags: flags, Wake: func() {
		if wakes != nil {
			wakes.Add(1)
		}
	}})
	require.NoError(t, err)
	return h
}

func read(t *testing.T, h cuse.Handle, ctx context.Context, size int, flags uint32) ([]byte, error) {
	t.Helper()
	res, err := h.Read(ctx, &cuse.ReadRequest{Size: size, Flags: flags})
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, b := range res.Data {
		out = append(out, b...)
	}
	if res.Done != nil {
		res.Done(true)
	}
	return out, nil
}

func write(h cuse.Handle, ctx context.Context, s string, flags uint32) (int, error) {
	return h.Write(ctx, &cuse.WriteRequest{Data: [][]byte{[]byte(s)}, Flags: flags})
}

func TestPipeSemantics(t *testing.T) {
	ctx := context.Background()
	p := New(8)
	var wakes atomic.Int32
	r := open(t, p, syscall.O_RDONLY, &wakes)
	w := open(t, p, syscall.O_WRONLY, nil)

	_, err := read(t, r, ctx, 4, syscall.O_NONBLOCK)
	require.Equal(t, syscall.EAGAIN, err, "empty, non-blocking")
	n, err := write(w, ctx, "abcdefghij", syscall.O_NONBLOCK)
	require.NoError(t, err)
	require.Equal(t, 8, n, "takes what fits")
	_, err = write(w, ctx, "x", syscall.O_NONBLOCK)
	require.Equal(t, syscall.EAGAIN, err, "full, non-blocking")
	require.Positive(t, wakes.Load(), "writes wake poll waiters")

	ev, _ := r.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn | cuse.EventOut})
	require.Equal(t, cuse.EventIn, ev, "full: readable, not writable")

	// The ring wraps: read 6, write 5, read all.
	got, err := read(t, r, ctx, 6, 0)
	require.NoError(t, err)
	require.Equal(t, "abcdef", string(got))
	_, err = write(w, ctx, "klmno", 0)
	require.NoError(t, err)
	got, err = read(t, r, ctx, 100, 0)
	require.NoError(t, err)
	require.Equal(t, "ghklmno", string(got))

	// A blocked write completes as a reader drains.
	done := make(chan int)
	go func() { n, _ := write(w, ctx, "0123456789ABCDEF", 0); done <- n }()
	var all []byte
	for len(all) < 16 {
		b, err := read(t, r, ctx, 5, 0)
		require.NoError(t, err)
		all = append(all, b...)
	}
	require.Equal(t, 16, <-done)
	require.Equal(t, "0123456789ABCDEF", string(all))

	// EOF after the last writer; a new writer clears it.
	w.Release(ctx)
	got, err = read(t, r, ctx, 10, 0)
	require.NoError(t, err)
	require.Empty(t, got)
	ev, _ = r.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn})
	require.Equal(t, cuse.EventIn|cuse.EventHup, ev&(cuse.EventIn|cuse.EventHup))
	late := open(t, p, syscall.O_RDONLY, nil)
	_, err = read(t, late, ctx, 10, syscall.O_NONBLOCK)
	require.Equal(t, syscall.EAGAIN, err, "a reader opened after the hang-up waits for the next writer")
	w2 := open(t, p, syscall.O_RDWR, nil)
	_, err = read(t, r, ctx, 10, syscall.O_NONBLOCK)
	require.Equal(t, syscall.EAGAIN, err, "no EOF while a writer is open")
	w2.Release(ctx)
	got, err = read(t, late, ctx, 10, 0)
	require.NoError(t, err)
	require.Empty(t, got, "EOF once that writer has gone")
	late.Release(ctx)
	r.Release(ctx)
}

func TestPipeCancel(t *testing.T) {
	p := New(4)
	h := open(t, p, syscall.O_RDWR, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	_, err := read(t, h, ctx, 4, 0)
	require.ErrorIs(t, err, context.Canceled, "a blocked read ends with its context")

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	n, err := write(h, ctx, "abcdef", 0)
	require.NoError(t, err)
	require.Equal(t, 4, n, "an interrupted write reports what it took")
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = write(h, ctx, "x", 0)
	require.ErrorIs(t, err, context.Canceled)
}

func TestPipeUndeliveredReadKeepsBytes(t *testing.T) {
	ctx := context.Background()
	p := New(16)
	h := open(t, p, syscall.O_RDWR, nil)
	_, err := write(h, ctx, "keep", 0)
	require.NoError(t, err)
	res, err := h.Read(ctx, &cuse.ReadRequest{Size: 16})
	require.NoError(t, err)
	res.Done(false)
	got, err := read(t, h, ctx, 16, 0)
	require.NoError(t, err)
	require.Equal(t, "keep", string(got))
	require.Zero(t, p.Buffered())
}

// A reader can see its READ reply before the reply's Done runs; a poll it
// sends next must not report the bytes it already holds.
func TestPipePollDuringReply(t *testing.T) {
	ctx := context.Background()
	p := New(8)
	r := open(t, p, syscall.O_RDONLY, nil)
	w := open(t, p, syscall.O_WRONLY, nil)
	_, err := write(w, ctx, "x", 0)
	require.NoError(t, err)
	res, err := r.Read(ctx, &cuse.ReadRequest{Size: 4})
	require.NoError(t, err)
	ev, _ := r.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn})
	require.Zero(t, ev, "the only byte is in the reply")
	w.Release(ctx)
	ev, _ = r.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn})
	require.Equal(t, cuse.EventIn|cuse.EventHup, ev&(cuse.EventIn|cuse.EventHup), "hang-up before the reply's Done")
	res.Done(true)
	ev, _ = r.Poll(ctx, &cuse.PollRequest{Events: cuse.EventIn})
	require.Equal(t, cuse.EventIn|cuse.EventHup, ev&(cuse.EventIn|cuse.EventHup))
	r.Release(ctx)
}
