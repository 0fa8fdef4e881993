package cuse

import (
	"context"
	"syscall"
)

// Poll event bits (EPOLLIN etc.; the FUSE protocol carries them unmangled).
const (
	EventIn  uint32 = 0x001 // POLLIN
	EventOut uint32 = 0x004 // POLLOUT
	EventErr uint32 = 0x008 // POLLERR
	EventHup uint32 = 0x010 // POLLHUP
	// EventRdNorm and EventWrNorm accompany EventIn/EventOut as the kernel's
	// DEFAULT_POLLMASK does.
	EventRdNorm uint32 = 0x040
	EventWrNorm uint32 = 0x100
)

// A Device is what one character device serves. The server calls Open for
// every open(2) of the node; everything after that goes to the Handle it
// returns. A Device knows nothing of the transport: a CUSE node and a file
// of a Dir are served alike.
type Device interface {
	// Open admits one open file description. It may block (honouring ctx,
	// which INTERRUPT cancels) and fails with a syscall.Errno the opener
	// sees (ENXIO, EBUSY, EINVAL...).
	Open(ctx context.Context, req *OpenRequest) (Handle, error)
}

// A Handle is one open file description of the device.
//
// Read, Write and Poll may be called concurrently with each other and,
// for different requests, with themselves; Release is called once, after
// every other call on the handle has returned.
type Handle interface {
	// Read returns up to req.Size bytes. Blocking rules: wait until at
	// least one byte is available, unless req.Nonblock() (then fail with
	// syscall.EAGAIN) or ctx is cancelled (return ctx.Err(); the reader
	// sees EINTR). The server sets O_NONBLOCK on every READ and parks
	// the ones that would wait (see ReadRequest.Parkable), so a Read
	// that blocks is one whose device chose to. Returning no data and a
	// nil error is end of file.
	//
	// The returned ReadResult's slices are written to the kernel with one
	// writev and are not copied first: they must stay valid until Done is
	// called. Done is called exactly once after the reply was written,
	// with delivered false when the kernel refused it (the request had
	// been interrupted meanwhile), so a stream can keep those bytes.
	Read(ctx context.Context, req *ReadRequest) (ReadResult, error)

	// Write consumes req.Data and returns how many bytes it took. Blocking
	// rules as for Read: block until all bytes are taken, or at least one
	// byte with req.Nonblock() (none fits: syscall.EAGAIN), or until ctx is
	// cancelled (return the bytes taken so far, or ctx.Err() if none).
	// req.Data is valid only until Write returns, unless it came from the
	// device's own WriteBufferer (see there).
	Write(ctx context.Context, req *WriteRequest) (int, error)

	// Poll reports the current readiness (EventIn, EventOut, EventHup,
	// EventErr) among req.Events. It must not block. When readiness may
	// have changed later, the handle calls the Waker it got at Open; the
	// server turns that into NOTIFY_POLL for the kernel's poll handle.
	Poll(ctx context.Context, req *PollRequest) (revents uint32, err error)

	// Release ends the handle. CUSE's RELEASE is synchronous: the client's
	// close(2) waits for it, so Release must not block for long.
	Release(ctx context.Context)
}

// A Flusher is a Handle that can report, at close(2) of a file
// descriptor, that written bytes will not be delivered: the error reaches
// close(2) as its errno. Only the FUSE fallback asks (FUSE's FLUSH, sent
// at every close of a descriptor, before the last one's RELEASE); CUSE
// has no FLUSH (the kernel's cuse_frontend_fops has no flush), so there
// close(2) returns 0 whatever happened. Flush may block, like close(2)
// on a device that drains; ctx ends it.
type Flusher interface {
	Flush(ctx context.Context) error
}

// A WriteBufferer is a Device that lends the memory WRITE payloads are read
// into, so a payload lands where it will be consumed (for example in DMA
// buffers) without a copy in user space.
//
// A request reader asks for buffers when it has none, before it knows what
// the next request is, and keeps them across requests that are not WRITEs.
// WriteBuffer must not block; it returns buffers totalling at least size
// bytes, or nil to let the server use its own. done is called exactly once
// per lending: after a WRITE with the number of bytes Handle.Write returned
// (the handle then owns that many bytes from the start of the buffers and
// gives them back by its own means; the rest is free again), or with 0 when
// the write took nothing or the reader stops.
type WriteBufferer interface {
	WriteBuffer(size int) (bufs [][]byte, done func(used int))
}

// A Waker is given to each handle at Open. Calling it says that the
// handle's readiness may have changed: data to read, room to write, a
// hang-up or an error, or the end of whatever made a Read answer EAGAIN.
// The server then sends NOTIFY_POLL if the kernel asked to be notified
// for this handle, and asks the device again for the handle's parked
// READs, on the calling goroutine: the reply goes out from there. So a
// Waker must be called with none of the device's locks held (it may call
// Read, and a ReadResult's Done); it never waits for anything but that,
// is safe from any goroutine and after Release, and a redundant call is
// cheap.
type Waker func()

// Caller identifies the process that made a request.
type Caller struct {
	UID, GID, PID uint32
}

// OpenRequest describes an open(2).
type OpenRequest struct {
	Caller Caller
	// Flags are the open flags (O_RDONLY/O_WRONLY/O_RDWR, O_NONBLOCK if it
	// was given to open(2); the kernel strips O_CREAT, O_EXCL, O_NOCTTY and
	// O_TRUNC).
	Flags uint32
	// Wake is this handle's Waker (see there).
	Wake Waker
}

// Nonblock reports whether the open itself must not block.
func (r *OpenRequest) Nonblock() bool { return r.Flags&syscall.O_NONBLOCK != 0 }

// Readable and Writable report the access mode.
func (r *OpenRequest) Readable() bool { return r.Flags&syscall.O_ACCMODE != syscall.O_WRONLY }

// Writable reports whether the handle was opened for writing.
func (r *OpenRequest) Writable() bool { return r.Flags&syscall.O_ACCMODE != syscall.O_RDONLY }

// ReadRequest describes one READ: at most 128 KiB of a read(2).
type ReadRequest struct {
	Caller Caller
	Size   int
	// Flags are the file's current f_flags; O_NONBLOCK is honoured per
	// request because fcntl(F_SETFL) is not announced to the server.
	Flags uint32
	// MaxSlices, when not 0, bounds the slices of the ReadResult (the
	// server asks for MaxReplySlices: one writev takes at most IOV_MAX
	// buffers). A short read is fine for a stream; a device that returns
	// more slices is served by a copy.
	MaxSlices int
	// Parkable says that the caller waits for data although Flags has
	// O_NONBLOCK: the server added it. On EAGAIN the server parks the
	// request and asks again, with the same request, after the handle's
	// next Waker call; no goroutine waits meanwhile. A device that cannot
	// call its Waker when data comes (one that busy-polls) may instead
	// block as a blocking read would, honouring ctx.
	Parkable bool
}

// Nonblock reports whether this request must not block.
func (r *ReadRequest) Nonblock() bool { return r.Flags&syscall.O_NONBLOCK != 0 }

// WriteRequest describes one WRITE: at most 128 KiB of a write(2).
type WriteRequest struct {
	Caller Caller
	// Data is the payload, in one or more slices (several when it landed
	// in buffers lent by a WriteBufferer).
	Data  [][]byte
	Flags uint32
}

// Nonblock reports whether this request must not block.
func (r *WriteRequest) Nonblock() bool { return r.Flags&syscall.O_NONBLOCK != 0 }

// Len is the payload length.
func (r *WriteRequest) Len() int {
	n := 0
	for _, b := range r.Data {
		n += len(b)
	}
	return n
}

// PollRequest describes one POLL.
type PollRequest struct {
	Caller Caller
	// Events are the requested events (POLLIN|POLLOUT|...).
	Events uint32
}

// ReadResult is the reply to a READ: Data is written as is (zero-copy), then
// Done(delivered) is called if it is not nil.
type ReadResult struct {
	Data [][]byte
	Done func(delivered bool)
}

// Len is the number of bytes in the reply.
func (r ReadResult) Len() int {
	n := 0
	for _, b := range r.Data {
		n += len(b)
	}
	return n
}
