package fusefile

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"tbstream/cuse"
)

// guard keeps a device's panic to the one request that hit it, as the
// CUSE server does: every call into a cuse.Device, Handle or ReadResult
// goes through a wrapper below that turns a panic into EIO for the caller,
// logs one line with the panic value and the stack, and counts it. go-fuse
// recovers panics in node methods itself, but answers them with a line in
// its trace log only, and a ReadResult's Done runs after the reply is
// written, outside its recover, where a panic ends the process; its
// PanicHandler is pointed here too, for panics in this package's own code.
type guard struct {
	log    *slog.Logger
	panics atomic.Uint64
}

// recoverDevice, deferred around a device call, turns a panic into *err
// (if err is not nil). It must be the deferred function itself: recover
// only stops a panic when called directly by one.
func (g *guard) recoverDevice(op string, err *error) {
	if v := recover(); v != nil {
		e := g.panicked(op, v)
		if err != nil {
			*err = e
		}
	}
}

// panicked logs and counts a recovered panic (the line is written before
// the count moves) and returns the error the request fails with.
func (g *guard) panicked(op string, v any) error {
	g.log.Error("panic in device handler; the request fails with EIO", "op", op, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	g.panics.Add(1)
	return fmt.Errorf("%s: device panicked: %v: %w", op, v, syscall.EIO)
}

// fusePanic is go-fuse's PanicHandler: for a panic its own recover caught.
func (g *guard) fusePanic(v any) fuse.Status {
	g.panicked("FUSE request", v)
	return fuse.EIO
}

func (g *guard) open(ctx context.Context, dev cuse.Device, req *cuse.OpenRequest) (h cuse.Handle, err error) {
	defer g.recoverDevice("open", &err)
	h, err = dev.Open(ctx, req)
	if h == nil && err == nil {
		err = fmt.Errorf("open returned neither a handle nor an error: %w", syscall.EIO)
		g.log.Error("device bug", "err", err)
	}
	return h, err
}

func (g *guard) read(ctx context.Context, h cuse.Handle, req *cuse.ReadRequest) (res cuse.ReadResult, err error) {
	defer g.recoverDevice("read", &err)
	return h.Read(ctx, req)
}

func (g *guard) write(ctx context.Context, h cuse.Handle, req *cuse.WriteRequest) (n int, err error) {
	defer g.recoverDevice("write", &err)
	return h.Write(ctx, req)
}

// release releases h; a panic there is logged and counted, and close(2)
// succeeds all the same.
func (g *guard) release(ctx context.Context, h cuse.Handle) {
	defer g.recoverDevice("release", nil)
	h.Release(ctx)
}

func (g *guard) flush(ctx context.Context, f cuse.Flusher) (err error) {
	defer g.recoverDevice("flush", &err)
	return f.Flush(ctx)
}

// done calls a ReadResult's Done, if it has one.
func (g *guard) done(done func(bool), delivered bool) {
	if done == nil {
		return
	}
	defer g.recoverDevice("read done", nil)
	done(delivered)
}
