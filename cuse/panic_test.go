package cuse_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/fakekernel"
	"tbstream/cuse/loopback"
)

// panicDevice is a loopback pipe that panics once in each call named in
// pending, then behaves. Release and Done do their work first and panic
// after, so the pipe's turns are given back; the others panic before
// touching the pipe.
type panicDevice struct {
	cuse.Device
	mu      sync.Mutex
	pending map[string]bool
}

func newPanicDevice(ops ...string) *panicDevice {
	d := &panicDevice{Device: loopback.New(0), pending: map[string]bool{}}
	for _, op := range ops {
		d.pending[op] = true
	}
	return d
}

func (d *panicDevice) maybePanic(op string) {
	d.mu.Lock()
	p := d.pending[op]
	delete(d.pending, op)
	d.mu.Unlock()
	if p {
		panic("injected panic in " + op)
	}
}

func (d *panicDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	d.maybePanic("open")
	h, err := d.Device.Open(ctx, req)
	if err != nil {
		return nil, err
	}
	return &panicHandle{Handle: h, d: d}, nil
}

type panicHandle struct {
	cuse.Handle
	d *panicDevice
}

func (h *panicHandle) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	h.d.maybePanic("read")
	res, err := h.Handle.Read(ctx, req)
	if done := res.Done; done != nil {
		res.Done = func(delivered bool) {
			done(delivered)
			h.d.maybePanic("done")
		}
	}
	return res, err
}

func (h *panicHandle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	h.d.maybePanic("write")
	return h.Handle.Write(ctx, req)
}

func (h *panicHandle) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	h.d.maybePanic("poll")
	return h.Handle.Poll(ctx, req)
}

func (h *panicHandle) Release(ctx context.Context) {
	h.Handle.Release(ctx)
	h.d.maybePanic("release")
}

// logBuffer collects what a server logs, from any goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// requirePanicLogged checks that each panic left exactly one error line,
// with the panic value and the stack of the panicking goroutine.
func requirePanicLogged(t *testing.T, logs string, ops ...string) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "panic in device handler") {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, len(ops), "one log line per panic:\n%s", logs)
	for i, op := range ops {
		require.Contains(t, lines[i], "level=ERROR")
		require.Contains(t, lines[i], "injected panic in "+op)
		require.Contains(t, lines[i], "maybePanic", "the stack reaches the panicking call")
	}
}

// TestDevicePanics: a device call that panics fails its request with EIO,
// logs one line with the stack, is counted, and the next request works.
// Without the recovery the panic would end the test binary.
func TestDevicePanics(t *testing.T) {
	tests := []struct {
		op  string
		run func(t *testing.T, r *rig) // the failing request, then one that works
	}{
		{"open", func(t *testing.T, r *rig) {
			_, err := r.k.Open(r.ctx, syscall.O_RDWR)
			require.Equal(t, syscall.EIO, fakekernel.Errno(err))
			_, err = r.k.Open(r.ctx, syscall.O_RDWR)
			require.NoError(t, err)
		}},
		{"write", func(t *testing.T, r *rig) {
			fh := openRW(t, r)
			_, err := r.k.Write(r.ctx, fh, []byte("lost"), 0)
			require.Equal(t, syscall.EIO, fakekernel.Errno(err))
			n, err := r.k.Write(r.ctx, fh, []byte("kept"), 0)
			require.NoError(t, err)
			require.Equal(t, 4, n)
			got, err := r.k.Read(r.ctx, fh, 100, 0)
			require.NoError(t, err)
			require.Equal(t, "kept", string(got))
		}},
		{"read", func(t *testing.T, r *rig) {
			fh := openRW(t, r)
			_, err := r.k.Write(r.ctx, fh, []byte("data"), 0)
			require.NoError(t, err)
			_, err = r.k.Read(r.ctx, fh, 100, 0)
			require.Equal(t, syscall.EIO, fakekernel.Errno(err))
			got, err := r.k.Read(r.ctx, fh, 100, 0)
			require.NoError(t, err)
			require.Equal(t, "data", string(got), "the device was not touched")
		}},
		{"done", func(t *testing.T, r *rig) {
			fh := openRW(t, r)
			_, err := r.k.Write(r.ctx, fh, []byte("ab"), 0)
			require.NoError(t, err)
			got, err := r.k.Read(r.ctx, fh, 1, 0)
			require.NoError(t, err, "the reply went out before Done panicked")
			require.Equal(t, "a", string(got))
			got, err = r.k.Read(r.ctx, fh, 100, 0)
			require.NoError(t, err)
			require.Equal(t, "b", string(got))
		}},
		{"poll", func(t *testing.T, r *rig) {
			fh := openRW(t, r)
			_, err := r.k.Poll(r.ctx, fh, 1, cuse.PollScheduleNotify, cuse.EventOut)
			require.Equal(t, syscall.EIO, fakekernel.Errno(err))
			rev, err := r.k.Poll(r.ctx, fh, 1, cuse.PollScheduleNotify, cuse.EventOut)
			require.NoError(t, err)
			require.Equal(t, cuse.EventOut, rev)
		}},
		{"release", func(t *testing.T, r *rig) {
			fh := openRW(t, r)
			require.NoError(t, r.k.Release(r.ctx, fh), "close(2) is not the place for the device's bug")
			fh = openRW(t, r)
			_, err := r.k.Write(r.ctx, fh, []byte("x"), 0)
			require.NoError(t, err)
			require.NoError(t, r.k.Release(r.ctx, fh))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			logs := &logBuffer{}
			r := start(t, newPanicDevice(tt.op), cuse.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			tt.run(t, r)
			// Done runs after its reply is out, so the client may be
			// ahead of it: wait for the count, but only against a hang.
			waitFor(t, "the panic counted", func() bool { return r.srv.Stats().Panics.Load() >= 1 })
			require.EqualValues(t, 1, r.srv.Stats().Panics.Load())
			requirePanicLogged(t, logs.String(), tt.op)
		})
	}
}

// TestReleasePanicAtShutdown: handles the server releases itself at
// shutdown may panic too; Serve still returns cleanly.
func TestReleasePanicAtShutdown(t *testing.T) {
	logs := &logBuffer{}
	r := start(t, newPanicDevice("release"), cuse.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	openRW(t, r)
	require.NoError(t, r.srv.Close())
	require.NoError(t, <-r.serve)
	require.EqualValues(t, 1, r.srv.Stats().Panics.Load())
	requirePanicLogged(t, logs.String(), "release")
}

// bufferPanicDevice lends WRITE buffers, panicking in the first
// WriteBuffer call and in the first give-back.
type bufferPanicDevice struct {
	cuse.Device
	mu           sync.Mutex
	lends, dones int
}

func (d *bufferPanicDevice) WriteBuffer(size int) ([][]byte, func(int)) {
	d.mu.Lock()
	d.lends++
	first := d.lends == 1
	d.mu.Unlock()
	if first {
		panic(fmt.Sprintf("injected panic in write buffer (size %d)", size))
	}
	return [][]byte{make([]byte, size)}, func(int) {
		d.mu.Lock()
		d.dones++
		first := d.dones == 1
		d.mu.Unlock()
		if first {
			panic("injected panic in write buffer done")
		}
	}
}

// TestWriteBufferPanics: a WriteBufferer that panics while lending or
// taking buffers back costs nothing but the log lines: writes go on.
func TestWriteBufferPanics(t *testing.T) {
	logs := &logBuffer{}
	r := start(t, &bufferPanicDevice{Device: loopback.New(0)}, cuse.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	fh := openRW(t, r)
	for _, s := range []string{"one", "two"} {
		_, err := r.k.Write(r.ctx, fh, []byte(s), 0)
		require.NoError(t, err)
	}
	got, err := r.k.Read(r.ctx, fh, 100, 0)
	require.NoError(t, err)
	require.Equal(t, "onetwo", string(got))
	require.EqualValues(t, 2, r.srv.Stats().Panics.Load())
	require.Contains(t, logs.String(), "injected panic in write buffer (size")
	require.Contains(t, logs.String(), "injected panic in write buffer done")
}

func openRW(t *testing.T, r *rig) uint64 {
	t.Helper()
	fh, err := r.k.Open(r.ctx, syscall.O_RDWR)
	require.NoError(t, err)
	return fh
}
