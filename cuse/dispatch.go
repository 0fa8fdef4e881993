package cuse

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// handle decodes and answers one request that a reader read into bufs.
func (s *Server) handle(bufs *buffers, n int) {
	var op uint32
	var unique uint64 // set once the request may be answered
	defer s.recoverRequest(&op, &unique)
	req, err := ParseRequest(bufs.head[:min(n, len(bufs.head))], n)
	s.stats.Requests.Add(1)
	if err != nil {
		s.stats.Malformed.Add(1)
		s.log.Warn("malformed request", "err", err)
		// Answer what can be answered, so no caller waits forever; unique 0
		// would be read as a notification.
		if n >= InHeaderSize && req.Header.Unique != 0 && req.Header.Opcode != OpInterrupt {
			s.reply(req.Header.Unique, syscall.EIO)
		}
		return
	}
	h := &req.Header
	op = h.Opcode
	if h.Unique == 0 {
		// The kernel numbers requests from 2; a reply to 0 would read as a
		// notification.
		s.stats.Malformed.Add(1)
		s.log.Warn("malformed request", "op", OpName(h.Opcode), "err", "unique 0")
		return
	}
	unique = h.Unique
	if h.Opcode != OpWrite {
		// Only a WRITE needs the payload buffer while it is handled; a READ
		// may block for long, and must not pin 128 KiB meanwhile.
		s.putBuffer(bufs)
	}
	if s.opts.Debug {
		s.log.Debug("rx", "op", OpName(h.Opcode), "unique", h.Unique, "len", h.Length)
	}
	if h.Opcode == OpInterrupt {
		s.interrupt(&req)
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.mu.Lock()
	s.mu.inflight[h.Unique] = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.inflight, h.Unique)
		s.mu.Unlock()
		cancel()
	}()
	caller := Caller{UID: h.Uid, GID: h.Gid, PID: h.Pid}
	switch h.Opcode {
	case OpOpen:
		s.open(ctx, &req, caller)
	case OpRead:
		s.read(ctx, &req, caller)
	case OpWrite:
		s.write(ctx, &req, caller, bufs)
	case OpRelease:
		s.release(ctx, &req)
	case OpPoll:
		s.poll(ctx, &req, caller)
	case OpIoctl:
		// The real driver has no ioctl; restricted mode (no
		// CUSE_UNRESTRICTED_IOCTL) means nothing else to negotiate.
		s.reply(h.Unique, syscall.ENOTTY)
	case OpCuseInit:
		s.log.Warn("second CUSE_INIT")
		s.reply(h.Unique, syscall.EPROTO)
	default:
		s.stats.Unknown.Add(1)
		s.log.Info("unsupported opcode", "op", OpName(h.Opcode))
		s.reply(h.Unique, syscall.ENOSYS)
	}
}

// handleOf finds the handle for fh.
func (s *Server) handleOf(fh uint64) *openHandle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.handles[fh]
}

func (s *Server) open(ctx context.Context, req *Request, caller Caller) {
	s.mu.Lock()
	s.mu.nextFh++
	fh := s.mu.nextFh
	s.mu.Unlock()
	h, err := s.devOpen(ctx, &OpenRequest{Caller: caller, Flags: req.Open.Flags, Wake: func() { s.wake(fh) }})
	if err != nil {
		s.reply(req.Header.Unique, s.errno(err, "open"))
		return
	}
	s.mu.Lock()
	s.mu.handles[fh] = &openHandle{h: h}
	s.mu.Unlock()
	out := make([]byte, OutHeaderSize+OpenOutSize)
	// fuse_open_out{fh, open_flags=0, backing_id=0}: CUSE applies no
	// FOPEN_* flag (it never calls fuse_finish_open); I/O is always direct.
	binary.LittleEndian.PutUint64(out[OutHeaderSize:], fh)
	putOutHeader(out, len(out), 0, req.Header.Unique)
	if s.send(out) != nil {
		// The opener is gone (interrupted): nobody will RELEASE this fh.
		s.mu.Lock()
		delete(s.mu.handles, fh)
		s.mu.Unlock()
		s.devRelease(context.Background(), h)
	}
}

func (s *Server) read(ctx context.Context, req *Request, caller Caller) {
	s.stats.Reads.Add(1)
	oh := s.handleOf(req.Read.Fh)
	if oh == nil {
		s.reply(req.Header.Unique, syscall.EBADF)
		return
	}
	size := min(int(req.Read.Size), s.maxRead)
	// The kernel splits a read(2) into READs of max_read bytes, with the
	// offset counting from 0 in each syscall, and stops at the first short
	// reply. A READ at a non-zero offset therefore continues a read(2)
	// that already has data: it must not wait for more (a stream's read
	// returns what is there), so it is non-blocking, and "nothing now" is
	// an empty reply that ends the syscall with what it has.
	continued := req.Read.Offset > 0
	flags := req.Read.Flags
	if continued {
		flags |= syscall.O_NONBLOCK
	}
	res, err := s.devRead(ctx, oh.h, &ReadRequest{Caller: caller, Size: size, Flags: flags})
	if err != nil {
		s.devDone(res.Done, false)
		if continued && Errno(err) == syscall.EAGAIN {
			res, err = ReadResult{}, nil
		} else {
			s.reply(req.Header.Unique, s.errno(err, "read"))
			return
		}
	}
	data := clip(res.Data, size)
	n := total(data) // data is the device's until Done: not read after it
	hdr := make([]byte, OutHeaderSize)
	putOutHeader(hdr, OutHeaderSize+n, 0, req.Header.Unique)
	err = s.sendv(append([][]byte{hdr}, data...))
	s.devDone(res.Done, err == nil)
	if err == nil {
		s.stats.ReadBytes.Add(uint64(n))
	}
}

// clip limits data to n bytes (a device returning more is a bug, not a
// reason to corrupt the framing).
func clip(data [][]byte, n int) [][]byte {
	if total(data) <= n {
		return data
	}
	var out [][]byte
	for _, b := range data {
		k := min(n, len(b))
		out = append(out, b[:k])
		if n -= k; n == 0 {
			break
		}
	}
	return out
}

func (s *Server) write(ctx context.Context, req *Request, caller Caller, bufs *buffers) {
	s.stats.Writes.Add(1)
	oh := s.handleOf(req.Write.Fh)
	if oh == nil {
		s.reply(req.Header.Unique, syscall.EBADF)
		return
	}
	wr := &WriteRequest{Caller: caller, Data: bufs.payload(req.PayloadLen), Flags: req.Write.Flags}
	n, err := s.devWrite(ctx, oh.h, wr)
	if n < 0 || n > req.PayloadLen {
		err = fmt.Errorf("device took %d of %d bytes", n, req.PayloadLen)
		n = 0
	}
	if bufs.lent != nil {
		// The payload was in lent buffers; the handle now owns n bytes.
		s.giveBack(bufs, n)
	}
	if err != nil && n == 0 {
		s.reply(req.Header.Unique, s.errno(err, "write"))
		return
	}
	out := make([]byte, OutHeaderSize+WriteOutSize)
	binary.LittleEndian.PutUint32(out[OutHeaderSize:], uint32(n))
	putOutHeader(out, len(out), 0, req.Header.Unique)
	if s.send(out) == nil {
		s.stats.WriteBytes.Add(uint64(n))
	}
}

func (s *Server) release(ctx context.Context, req *Request) {
	s.mu.Lock()
	oh := s.mu.handles[req.Release.Fh]
	delete(s.mu.handles, req.Release.Fh)
	s.mu.Unlock()
	if oh != nil {
		s.devRelease(ctx, oh.h)
	}
	s.reply(req.Header.Unique, 0)
}

func (s *Server) poll(ctx context.Context, req *Request, caller Caller) {
	s.stats.Polls.Add(1)
	s.mu.Lock()
	oh := s.mu.handles[req.Poll.Fh]
	if oh != nil && req.Poll.Flags&PollScheduleNotify != 0 {
		// Arm before asking the device, so a change racing with the
		// answer below still produces a NOTIFY_POLL.
		oh.kh, oh.armed = req.Poll.Kh, true
	}
	s.mu.Unlock()
	if oh == nil {
		s.reply(req.Header.Unique, syscall.EBADF)
		return
	}
	revents, err := s.devPoll(ctx, oh.h, &PollRequest{Caller: caller, Events: req.Poll.Events})
	if err != nil {
		s.reply(req.Header.Unique, s.errno(err, "poll"))
		return
	}
	out := make([]byte, OutHeaderSize+PollOutSize)
	binary.LittleEndian.PutUint32(out[OutHeaderSize:], revents)
	putOutHeader(out, len(out), 0, req.Header.Unique)
	s.send(out)
}

// wake is a handle's Waker: one NOTIFY_POLL per readiness change after the
// kernel asked for one. The kernel re-polls after the wake-up, which arms
// the handle again.
func (s *Server) wake(fh uint64) {
	s.mu.Lock()
	oh := s.mu.handles[fh]
	if oh == nil || !oh.armed {
		s.mu.Unlock()
		return
	}
	oh.armed = false
	kh := oh.kh
	s.mu.Unlock()
	msg := make([]byte, OutHeaderSize+NotifyPollOutLen)
	putOutHeader(msg, len(msg), NotifyPoll, 0)
	binary.LittleEndian.PutUint64(msg[OutHeaderSize:], kh)
	if s.send(msg) == nil {
		s.stats.Notifies.Add(1)
	}
}

// interrupt cancels the request an INTERRUPT names. It is never answered,
// except with EAGAIN when the target is not known yet (the INTERRUPT
// overtook its request between two readers); the kernel then queues it
// again.
func (s *Server) interrupt(req *Request) {
	s.mu.Lock()
	cancel := s.mu.inflight[req.Interrupt.Unique]
	s.mu.Unlock()
	if cancel != nil {
		s.stats.Interrupts.Add(1)
		cancel()
		return
	}
	s.stats.InterruptRetry.Add(1)
	s.reply(req.Header.Unique, syscall.EAGAIN)
}

// reply sends a header-only reply carrying errno (0 for success).
func (s *Server) reply(unique uint64, errno syscall.Errno) {
	out := make([]byte, OutHeaderSize)
	putOutHeader(out, OutHeaderSize, -int32(errno), unique)
	s.send(out)
}

// send writes one message. ENOENT (the request is gone) is counted and
// returned; a dead channel stops the server.
func (s *Server) send(iov ...[]byte) error {
	return s.sendv(iov)
}

func (s *Server) sendv(iov [][]byte) error {
	if s.opts.Debug && len(iov) > 0 && len(iov[0]) >= OutHeaderSize {
		le := binary.LittleEndian
		s.log.Debug("tx", "unique", le.Uint64(iov[0][8:]), "status", int32(le.Uint32(iov[0][4:])), "len", le.Uint32(iov[0]))
	}
	err := s.ch.WriteReply(iov)
	switch {
	case err == nil:
	case errors.Is(err, syscall.ENOENT):
		s.stats.Stale.Add(1)
	case errors.Is(err, os.ErrClosed), s.ctx.Err() != nil:
	case errors.Is(err, syscall.EINVAL):
		// The kernel refused this one message (a bug here, or a request
		// that was itself malformed); the connection is still good.
		s.stats.Refused.Add(1)
		s.log.Error("kernel refused a reply", "err", err)
	case errors.Is(err, syscall.ENODEV):
		s.fail(fmt.Errorf("%s: %w", s.opts.Name, err))
	default:
		s.log.Error("write reply", "err", err)
		s.fail(fmt.Errorf("%s: write reply: %w", s.opts.Name, err))
	}
	return err
}

// errno maps a device error to the errno crossing the CUSE boundary (see
// Errno), counting EAGAIN and logging what had to become EIO.
func (s *Server) errno(err error, op string) syscall.Errno {
	e := Errno(err)
	switch {
	case e == syscall.EAGAIN:
		s.stats.Again.Add(1)
	case e == syscall.EIO && !errors.Is(err, syscall.EIO):
		s.log.Error(op, "err", err)
	}
	return e
}

// Errno is the one mapping from a device error to an errno: a
// syscall.Errno (1..511) as is, a cancelled context as EINTR, anything else
// EIO.
func Errno(err error) syscall.Errno {
	var e syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e) && e > 0 && e < 512:
		return e
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	default:
		return syscall.EIO
	}
}
