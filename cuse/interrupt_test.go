package cuse_test

import (
	"context"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/fakekernel"
)

// stuckDevice blocks Open (when blockOpen), Read and Write until the
// request's context ends, and says on held which one is blocked.
type stuckDevice struct {
	blockOpen bool
	held      chan uint32 // opcode of the request now blocked
}

func (d *stuckDevice) block(ctx context.Context, op uint32) error {
	d.held <- op
	<-ctx.Done()
	return ctx.Err()
}

func (d *stuckDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	if d.blockOpen {
		return nil, d.block(ctx, cuse.OpOpen)
	}
	return stuckHandle{d}, nil
}

type stuckHandle struct{ d *stuckDevice }

func (h stuckHandle) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	return cuse.ReadResult{}, h.d.block(ctx, cuse.OpRead)
}

func (h stuckHandle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	return 0, h.d.block(ctx, cuse.OpWrite)
}

func (h stuckHandle) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	return cuse.EventOut, nil
}

func (h stuckHandle) Release(ctx context.Context) {}

// TestInterruptBlockedRequests: an OPEN, READ or WRITE blocked in the
// device is answered EINTR when the kernel sends INTERRUPT (the caller
// caught a signal), and the connection serves on. (Poll never blocks in
// the device: poll(2) sleeps in the kernel, which signals interrupt by
// themselves.)
func TestInterruptBlockedRequests(t *testing.T) {
	for _, op := range []uint32{cuse.OpOpen, cuse.OpRead, cuse.OpWrite} {
		t.Run(cuse.OpName(op), func(t *testing.T) {
			dev := &stuckDevice{blockOpen: op == cuse.OpOpen, held: make(chan uint32, 1)}
			r := start(t, dev, cuse.Options{})
			k, ctx := r.k, r.ctx
			var fh uint64
			if op != cuse.OpOpen {
				var err error
				fh, err = k.Open(ctx, syscall.O_RDWR)
				require.NoError(t, err)
			}
			var c *fakekernel.Call
			var err error
			switch op {
			case cuse.OpOpen:
				c, err = k.Start(cuse.OpOpen, make([]byte, cuse.OpenInSize), nil)
			case cuse.OpRead:
				c, err = k.StartRead(fh, 100, 0)
			case cuse.OpWrite:
				c, err = k.StartWrite(fh, []byte("stuck"), 0)
			}
			require.NoError(t, err)
			select {
			case got := <-dev.held:
				require.Equal(t, op, got)
			case <-ctx.Done():
				t.Fatal("the request never reached the device")
			}
			require.NoError(t, k.Interrupt(c))
			rep, err := c.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, syscall.EINTR, rep.Errno)
			require.EqualValues(t, 1, r.srv.Stats().Interrupts.Load())
			_, err = k.Poll(ctx, fh, 1, 0, cuse.EventOut)
			if op == cuse.OpOpen {
				require.Equal(t, syscall.EBADF, fakekernel.Errno(err), "the interrupted open made no handle")
			} else {
				require.NoError(t, err, "the connection serves on")
			}
		})
	}
}
