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
		// would be read as a notification, and INTERRUPT and the FORGETs
		// are never answered.
		if op := req.Header.Opcode; n >= InHeaderSize && req.Header.Unique != 0 && op != OpInterrupt && op != OpForget && op != OpBatchForget {
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
	var body []byte // LOOKUP's name, BATCH_FORGET's entries
	if s.fs != nil && (h.Opcode == OpLookup || h.Opcode == OpBatchForget) {
		body = bufs.body(n)
	}
	if h.Opcode != OpWrite {
		// Only a WRITE needs the payload buffer while it is handled.
		s.putBuffer(bufs)
	}
	if s.opts.Debug {
		s.log.Debug("rx", "op", OpName(h.Opcode), "unique", h.Unique, "node", h.NodeId, "len", h.Length)
	}
	if h.Opcode == OpInterrupt {
		s.interrupt(&req)
		return
	}
	// READ, WRITE and POLL use the reader's reusable context; the rest
	// (rare, and their contexts may be kept: OPEN starts rings with it) a
	// context of their own.
	var ctx context.Context
	var c canceler
	switch h.Opcode {
	case OpRead, OpWrite, OpPoll:
		bufs.ctx.reset()
		ctx, c = &bufs.ctx, &bufs.ctx
	default:
		cctx, cancel := context.WithCancel(s.ctx)
		defer cancel()
		ctx, c = cctx, cancelFunc(cancel)
	}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		c.cancel() // shutdown began: it will not find this one
	}
	s.mu.inflight[h.Unique] = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.inflight, h.Unique)
		s.mu.Unlock()
	}()
	caller := Caller{UID: h.Uid, GID: h.Gid, PID: h.Pid}
	switch h.Opcode {
	case OpOpen:
		s.open(ctx, &req, caller)
	case OpRead:
		s.read(ctx, &req, caller, bufs)
	case OpWrite:
		s.write(ctx, &req, caller, bufs)
	case OpRelease:
		s.release(ctx, &req)
	case OpPoll:
		s.poll(ctx, &req, caller, bufs)
	case OpIoctl:
		// The real driver has no ioctl; restricted mode (no
		// CUSE_UNRESTRICTED_IOCTL) means nothing else to negotiate.
		s.reply(h.Unique, syscall.ENOTTY)
	case OpCuseInit:
		s.log.Warn("second CUSE_INIT")
		s.reply(h.Unique, syscall.EPROTO)
	default:
		if s.fs != nil && s.fsRequest(ctx, &req, body) {
			return
		}
		s.stats.Unknown.Add(1)
		// A FUSE mount gets xattr, access and create requests from
		// ordinary tools: ENOSYS tells the kernel not to ask again.
		s.log.Debug("unsupported opcode", "op", OpName(h.Opcode))
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
	dev := s.dev
	var flags uint32 // CUSE applies no FOPEN_* flag (it never calls fuse_finish_open)
	if s.fs != nil {
		if req.Header.NodeId == rootID {
			s.reply(req.Header.Unique, syscall.EISDIR)
			return
		}
		if dev = s.fs.device(req.Header.NodeId); dev == nil {
			s.reply(req.Header.Unique, syscall.ENOENT)
			return
		}
		flags = openDirectIO | openNonseekable | openStream
	}
	s.mu.Lock()
	s.mu.nextFh++
	fh := s.mu.nextFh
	s.mu.Unlock()
	h, err := s.devOpen(ctx, dev, &OpenRequest{Caller: caller, Flags: req.Open.Flags, Wake: func() { s.wake(fh) }})
	if err != nil {
		s.reply(req.Header.Unique, s.errno(err, "open"))
		return
	}
	s.mu.Lock()
	s.mu.handles[fh] = &openHandle{h: h}
	s.mu.Unlock()
	out := make([]byte, OutHeaderSize+OpenOutSize)
	binary.LittleEndian.PutUint64(out[OutHeaderSize:], fh)
	binary.LittleEndian.PutUint32(out[OutHeaderSize+8:], flags)
	putOutHeader(out, len(out), 0, req.Header.Unique)
	if s.send(out) != nil {
		// The opener is gone (interrupted): nobody will RELEASE this fh.
		s.mu.Lock()
		delete(s.mu.handles, fh)
		s.mu.Unlock()
		s.devRelease(context.Background(), h)
	}
}

// read asks the device without blocking. A READ at a non-zero offset
// continues a read(2) that already has data (the kernel splits a read(2)
// into READs of max_read bytes, offsets counting from 0 in each syscall,
// and stops at the first short reply): it must not wait for more, so
// "nothing now" is an empty reply that ends the syscall with what it has.
// A first READ that would wait is parked (park.go).
func (s *Server) read(ctx context.Context, req *Request, caller Caller, bufs *buffers) {
	s.stats.Reads.Add(1)
	oh := s.handleOf(req.Read.Fh)
	if oh == nil {
		s.reply(req.Header.Unique, syscall.EBADF)
		return
	}
	size := min(int(req.Read.Size), s.maxRead)
	continued := req.Read.Offset > 0
	rr := &bufs.rr
	*rr = ReadRequest{Caller: caller, Size: size, Flags: req.Read.Flags | syscall.O_NONBLOCK, MaxSlices: MaxReplySlices,
		Parkable: !continued && req.Read.Flags&syscall.O_NONBLOCK == 0}
	res, err := s.devRead(ctx, oh.h, rr)
	if err != nil && Errno(err) == syscall.EAGAIN && (continued || rr.Parkable) {
		s.devDone(res.Done, false)
		if rr.Parkable {
			s.park(ctx, oh, req.Header.Unique, rr)
			return
		}
		res, err = ReadResult{}, nil
	}
	s.answerRead(req.Header.Unique, size, res, err)
}

// MaxReplySlices bounds the slices of one READ reply (ReadRequest.MaxSlices):
// the reply header and the slices go to the kernel in one writev(2), which
// takes at most IOV_MAX (1024) buffers.
const MaxReplySlices = 256

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
	wr := &bufs.wr
	*wr = WriteRequest{Caller: caller, Data: bufs.payloadInto(bufs.pl[:0], req.PayloadLen), Flags: req.Write.Flags}
	n, err := s.devWrite(ctx, oh.h, wr)
	bufs.pl = wr.Data[:0]
	clear(wr.Data)
	wr.Data = nil
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
	out := bufs.out[:OutHeaderSize+WriteOutSize]
	binary.LittleEndian.PutUint32(out[OutHeaderSize:], uint32(n))
	binary.LittleEndian.PutUint32(out[OutHeaderSize+4:], 0)
	putOutHeader(out, len(out), 0, req.Header.Unique)
	if s.send(out) == nil {
		s.stats.WriteBytes.Add(uint64(n))
	}
}

func (s *Server) release(ctx context.Context, req *Request) {
	s.mu.Lock()
	oh := s.mu.handles[req.Release.Fh]
	delete(s.mu.handles, req.Release.Fh)
	if oh != nil {
		for _, p := range oh.parked { // none: the kernel releases a file no READ uses
			delete(s.mu.parked, p.unique)
		}
		oh.parked = nil
	}
	s.mu.Unlock()
	if oh != nil {
		s.devRelease(ctx, oh.h)
	}
	s.reply(req.Header.Unique, 0)
}

func (s *Server) poll(ctx context.Context, req *Request, caller Caller, bufs *buffers) {
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
	pr := &bufs.pr
	*pr = PollRequest{Caller: caller, Events: req.Poll.Events}
	revents, err := s.devPoll(ctx, oh.h, pr)
	if err != nil {
		s.reply(req.Header.Unique, s.errno(err, "poll"))
		return
	}
	out := bufs.out[:OutHeaderSize+PollOutSize]
	binary.LittleEndian.PutUint32(out[OutHeaderSize:], revents)
	binary.LittleEndian.PutUint32(out[OutHeaderSize+4:], 0)
	putOutHeader(out, len(out), 0, req.Header.Unique)
	s.send(out)
}

// wake is a handle's Waker: one NOTIFY_POLL per readiness change after the
// kernel asked for one (the kernel re-polls after the wake-up, which arms
// the handle again), and a new try of the handle's parked READs, here, on
// the caller's goroutine.
func (s *Server) wake(fh uint64) {
	s.mu.Lock()
	oh := s.mu.handles[fh]
	if oh == nil {
		s.mu.Unlock()
		return
	}
	notify, kh := oh.armed, oh.kh
	oh.armed = false
	retry := false
	if len(oh.parked) > 0 {
		if oh.retrying {
			oh.again = true
		} else {
			oh.retrying, retry = true, true
		}
	}
	s.mu.Unlock()
	if notify {
		b := s.msgPool.Get().(*[OutHeaderSize + 16]byte)
		msg := b[:OutHeaderSize+NotifyPollOutLen]
		putOutHeader(msg, len(msg), NotifyPoll, 0)
		binary.LittleEndian.PutUint64(msg[OutHeaderSize:], kh)
		if s.send(msg) == nil {
			s.stats.Notifies.Add(1)
		}
		s.msgPool.Put(b)
	}
	if retry {
		s.retryParked(oh)
	}
}

// interrupt ends the request an INTERRUPT names: a parked READ is
// answered EINTR here; a request in a handler has its context cancelled
// (the handler answers). The INTERRUPT itself is never answered, except
// with EAGAIN when the target is not known yet (it overtook its request
// between two readers); the kernel then queues it again. The context is
// cancelled under mu, so a READ about to be parked sees it (park).
func (s *Server) interrupt(req *Request) {
	target := req.Interrupt.Unique
	s.mu.Lock()
	if s.unparkLocked(target) {
		s.mu.Unlock()
		s.stats.Interrupts.Add(1)
		s.reply(target, syscall.EINTR)
		return
	}
	c := s.mu.inflight[target]
	if c != nil {
		c.cancel()
	}
	s.mu.Unlock()
	if c != nil {
		s.stats.Interrupts.Add(1)
		return
	}
	s.stats.InterruptRetry.Add(1)
	s.reply(req.Header.Unique, syscall.EAGAIN)
}

// reply sends a header-only reply carrying errno (0 for success).
func (s *Server) reply(unique uint64, errno syscall.Errno) {
	b := s.msgPool.Get().(*[OutHeaderSize + 16]byte)
	putOutHeader(b[:OutHeaderSize], OutHeaderSize, -int32(errno), unique)
	s.send(b[:OutHeaderSize])
	s.msgPool.Put(b)
}

// A canceler ends one request's context (INTERRUPT, shutdown).
type canceler interface{ cancel() }

// cancelFunc is a context.CancelFunc as a canceler.
type cancelFunc context.CancelFunc

func (f cancelFunc) cancel() { f() }

// send writes one message. ENOENT (the request is gone) is counted and
// returned; a dead channel stops the server.
func (s *Server) send(msg []byte) error {
	iov := s.iovPool.Get().(*[][]byte)
	*iov = append((*iov)[:0], msg)
	err := s.sendv(*iov)
	(*iov)[0] = nil
	s.iovPool.Put(iov)
	return err
}

func (s *Server) sendv(iov [][]byte) error {
	// The kernel orders what a reply and the requests that follow it
	// do (a RELEASE after its FLUSH's answer, a READ after the WRITE it
	// waited for), but Go's memory model cannot see through /dev/fuse:
	// every reply passes mu, which handle takes for each request before
	// the device sees it, so what the device did before a reply
	// happens before what it does for any later request.
	s.mu.Lock()
	s.mu.Unlock()

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
