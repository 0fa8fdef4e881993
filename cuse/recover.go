package cuse

import (
	"context"
	"fmt"
	"runtime/debug"
	"syscall"
)

// A panic in the device must cost one request, not the daemon with every
// open stream: every call into the Device, a Handle, a WriteBufferer or a
// ReadResult's Done goes through one of the wrappers below, which turn a
// panic into an error carrying EIO (the caller's syscall fails with EIO),
// log one line with the panic value and the stack, and count it
// (Stats.Panics). State the server keeps across the call (lent buffers,
// the handle table, the in-flight map) stays consistent because the
// wrapper returns normally. handle has a last-resort recover for the
// server's own code.

// recoverDevice, deferred around a device call, turns a panic into *err
// (if err is not nil). It must be the deferred function itself: recover
// only stops a panic when called directly by one.
func (s *Server) recoverDevice(op string, err *error) {
	if v := recover(); v != nil {
		e := s.panicked(op, v)
		if err != nil {
			*err = e
		}
	}
}

// panicked logs and counts a recovered panic (the line is written before
// the count moves) and returns the error the request fails with.
func (s *Server) panicked(op string, v any) error {
	s.log.Error("panic in device handler; the request fails with EIO", "op", op, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	s.stats.Panics.Add(1)
	return fmt.Errorf("%s: %s: device panicked: %v: %w", s.opts.Name, op, v, syscall.EIO)
}

// recoverRequest is handle's last resort, for a panic in the server's own
// code: the request, if it may be answered, is answered EIO. Should the
// panic have come after its reply, the kernel refuses the second one with
// ENOENT (counted as Stale), which harms nobody.
func (s *Server) recoverRequest(op *uint32, unique *uint64) {
	v := recover()
	if v == nil {
		return
	}
	s.panicked(OpName(*op), v)
	if *unique != 0 && *op != OpInterrupt {
		s.reply(*unique, syscall.EIO)
	}
}

func (s *Server) devOpen(ctx context.Context, dev Device, req *OpenRequest) (h Handle, err error) {
	defer s.recoverDevice("open", &err)
	h, err = dev.Open(ctx, req)
	if h == nil && err == nil {
		err = fmt.Errorf("%s: open returned neither a handle nor an error", s.opts.Name)
	}
	return h, err
}

func (s *Server) devRead(ctx context.Context, h Handle, req *ReadRequest) (res ReadResult, err error) {
	defer s.recoverDevice("read", &err)
	return h.Read(ctx, req)
}

func (s *Server) devWrite(ctx context.Context, h Handle, req *WriteRequest) (n int, err error) {
	defer s.recoverDevice("write", &err)
	return h.Write(ctx, req)
}

func (s *Server) devFlush(ctx context.Context, fl Flusher) (err error) {
	defer s.recoverDevice("flush", &err)
	return fl.Flush(ctx)
}

func (s *Server) devPoll(ctx context.Context, h Handle, req *PollRequest) (revents uint32, err error) {
	defer s.recoverDevice("poll", &err)
	return h.Poll(ctx, req)
}

// devRelease releases h; a panic there is logged and counted, and the
// handle is gone all the same.
func (s *Server) devRelease(ctx context.Context, h Handle) {
	defer s.recoverDevice("release", nil)
	h.Release(ctx)
}

// devDone calls a ReadResult's Done, if it has one.
func (s *Server) devDone(done func(bool), delivered bool) {
	if done == nil {
		return
	}
	defer s.recoverDevice("read done", nil)
	done(delivered)
}

// devWriteBuffer asks a WriteBufferer for buffers; a panic means none.
func (s *Server) devWriteBuffer(wb WriteBufferer, size int) (bufs [][]byte, done func(int)) {
	defer s.recoverDevice("write buffer", nil)
	return wb.WriteBuffer(size)
}

// giveBack returns a reader's lent buffers to the device, used bytes of
// them now the handle's.
func (s *Server) giveBack(b *buffers, used int) {
	done := b.done
	b.lent, b.done = nil, nil
	s.devBuffersDone(done, used)
}

// devBuffersDone gives lent buffers back, if there are any.
func (s *Server) devBuffersDone(done func(int), used int) {
	if done == nil {
		return
	}
	defer s.recoverDevice("write buffer done", nil)
	done(used)
}
