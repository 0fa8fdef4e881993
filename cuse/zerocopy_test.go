package cuse_test

import (
	"bytes"
	"context"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
)

// slotDevice lends 4 KiB slots of one arena for WRITE payloads, as a DMA
// ring would, and answers READs from two slices of the arena.
type slotDevice struct {
	arena []byte

	mu        sync.Mutex
	lent      int   // buffers out
	used      []int // done(used) values
	landed    bool  // every payload slice pointed into the arena
	delivered []bool
	got       []byte
}

const slot = 4096

func newSlotDevice() *slotDevice {
	return &slotDevice{arena: make([]byte, 16*cuse.DefaultMaxIO), landed: true}
}

func (d *slotDevice) inArena(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	start := uintptr(unsafe.Pointer(&d.arena[0]))
	p := uintptr(unsafe.Pointer(&b[0]))
	return p >= start && p+uintptr(len(b)) <= start+uintptr(len(d.arena))
}

func (d *slotDevice) WriteBuffer(size int) ([][]byte, func(int)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	base := (d.lent % 16) * cuse.DefaultMaxIO
	d.lent++
	var bufs [][]byte
	for off := 0; off < size; off += slot {
		bufs = append(bufs, d.arena[base+off:base+off+slot])
	}
	return bufs, func(used int) {
		d.mu.Lock()
		d.used = append(d.used, used)
		d.mu.Unlock()
	}
}

func (d *slotDevice) Open(context.Context, *cuse.OpenRequest) (cuse.Handle, error) { return d, nil }

func (d *slotDevice) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	copy(d.arena, "head")
	copy(d.arena[len(d.arena)-4:], "tail")
	return cuse.ReadResult{
		Data: [][]byte{d.arena[:4], d.arena[len(d.arena)-4:]},
		Done: func(delivered bool) {
			d.mu.Lock()
			d.delivered = append(d.delivered, delivered)
			d.mu.Unlock()
		},
	}, nil
}

func (d *slotDevice) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range req.Data {
		d.landed = d.landed && d.inArena(b)
		d.got = append(d.got, b...)
	}
	return req.Len(), nil
}

func (d *slotDevice) Poll(context.Context, *cuse.PollRequest) (uint32, error) { return 0, nil }
func (d *slotDevice) Release(context.Context)                                 {}

func TestZeroCopyHooks(t *testing.T) {
	dev := newSlotDevice()
	r := start(t, dev, cuse.Options{})
	k, ctx := r.k, r.ctx
	fh, err := k.Open(ctx, syscall.O_RDWR)
	require.NoError(t, err)

	payload := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160000 > one request
	n, err := k.Write(ctx, fh, payload[:cuse.DefaultMaxIO], 0)
	require.NoError(t, err)
	require.Equal(t, cuse.DefaultMaxIO, n)
	n, err = k.Write(ctx, fh, payload[cuse.DefaultMaxIO:], 0)
	require.NoError(t, err)
	require.Equal(t, len(payload)-cuse.DefaultMaxIO, n)

	got, err := k.Read(ctx, fh, 100, 0)
	require.NoError(t, err)
	require.Equal(t, []byte("headtail"), got, "READ reply gathered from the device's slices")

	r.srv.Close()
	dev.mu.Lock()
	defer dev.mu.Unlock()
	require.True(t, dev.landed, "WRITE payloads were read straight into lent slots")
	require.Equal(t, payload, dev.got)
	require.Equal(t, []bool{true}, dev.delivered)
	// Each WRITE hands its buffers over with the bytes taken; buffers that
	// carried other requests or were still lent at shutdown come back with 0.
	require.Contains(t, dev.used, cuse.DefaultMaxIO)
	require.Contains(t, dev.used, len(payload)-cuse.DefaultMaxIO)
	require.Len(t, dev.used, dev.lent, "every lent buffer is given back exactly once")
}
