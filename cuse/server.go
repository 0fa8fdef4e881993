package cuse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Options configure one device.
type Options struct {
	// Name is DEVNAME: the node is /dev/<Name>. It must be unique among
	// CUSE devices, or the kernel aborts the connection.
	Name string
	// MaxRead and MaxWrite bound one READ or WRITE (default and ceiling in
	// practice: DefaultMaxIO; the kernel raises values below MinMaxIO).
	MaxRead, MaxWrite int
	// DevMajor and DevMinor request a fixed device number; 0/0 asks for a
	// dynamic major.
	DevMajor, DevMinor uint32
	// Node says what to do with the device node once it exists.
	Node NodeOptions
	// Logger receives one line per operator-relevant event (default
	// slog.Default()); with Debug every request and reply at debug level.
	Logger *slog.Logger
	Debug  bool
}

// maxIdleReaders bounds the goroutines waiting for a request while others
// are busy. At least one always waits, so an INTERRUPT is read even when
// every other reader is parked in a blocking READ.
const maxIdleReaders = 2

// Server serves one Device over one Channel: one CUSE connection, one node.
type Server struct {
	ch  Channel
	dev Device // CUSE: the one device
	fs  *tree  // FUSE: the directory of device files (Dir)
	// buffers is a Dir's WriteBufferer (SetBuffers), for every file.
	buffers atomic.Value
	opts    Options
	log     *slog.Logger

	maxRead, maxWrite int
	node              node // its made flag is guarded by mu
	initDone          atomic.Bool

	ctx    context.Context // cancelled by Close; parent of every request context
	cancel context.CancelFunc
	wg     sync.WaitGroup // readers and the handlers they run
	idle   atomic.Int32   // readers waiting for a request

	mu struct {
		sync.Mutex
		inflight map[uint64]canceler    // unique → its context, for INTERRUPT and shutdown
		handles  map[uint64]*openHandle // fh → handle
		parked   map[uint64]*openHandle // unique of a parked READ → its handle
		nextFh   uint64
		err      error // why serving stopped
	}
	bufPool      sync.Pool // *[]byte of readBufferSize: readers come and go
	hdrPool      sync.Pool // *[OutHeaderSize]byte for READ replies
	msgPool      sync.Pool // *[OutHeaderSize+16]byte for short replies and notifications
	iovPool      sync.Pool // *[][]byte for READ replies
	stats        Stats
	serving      atomic.Bool   // Serve has started
	ready        chan struct{} // closed when Init has succeeded
	done         chan struct{} // closed when Serve has returned
	shutdownOnce sync.Once
}

// openHandle is the server's state for one fh. Its fields after h are
// guarded by Server.mu.
type openHandle struct {
	h     Handle
	kh    uint64 // the kernel's poll handle, once a POLL asked for notification
	armed bool   // a NOTIFY_POLL is owed on the next readiness change

	parked   []parkedRead // READs waiting for data, oldest first (park.go)
	retrying bool         // a goroutine is asking the device for them
	again    bool         // a Waker call came while it was
	tried    bool         // the oldest was asked since the last Waker call
}

// Stats counts what the server did; read it with Server.Stats.
type Stats struct {
	Requests       atomic.Uint64 // requests read, all opcodes
	Reads, Writes  atomic.Uint64
	ReadBytes      atomic.Uint64
	WriteBytes     atomic.Uint64
	Polls          atomic.Uint64
	Notifies       atomic.Uint64 // NOTIFY_POLL sent
	Parked         atomic.Uint64 // READs parked to wait for data
	Interrupts     atomic.Uint64 // INTERRUPT that cancelled a request
	InterruptRetry atomic.Uint64 // INTERRUPT answered EAGAIN (target not known yet)
	Again          atomic.Uint64 // requests answered EAGAIN (non-blocking)
	Unknown        atomic.Uint64 // opcodes answered ENOSYS
	Malformed      atomic.Uint64 // requests that failed to parse
	Stale          atomic.Uint64 // replies the kernel refused with ENOENT
	Refused        atomic.Uint64 // replies the kernel refused with EINVAL
	Panics         atomic.Uint64 // panics recovered (device calls answered EIO)
}

// NewServer prepares a CUSE server for dev on ch. Nothing is sent until
// Init or Serve.
func NewServer(ch Channel, dev Device, opts Options) (*Server, error) {
	if _, err := DevInfo(opts.Name); err != nil {
		return nil, err
	}
	s := newServer(ch, opts, DefaultMaxIO)
	s.dev = dev
	s.node = newNode(opts.Name, opts.Node)
	return s, nil
}

// newServer makes the parts CUSE and FUSE share; ceiling bounds a request.
func newServer(ch Channel, opts Options, ceiling int) *Server {
	s := &Server{ch: ch, opts: opts, log: opts.Logger, done: make(chan struct{}), ready: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("dev", opts.Name)
	s.maxRead = clampIO(opts.MaxRead, ceiling)
	s.maxWrite = clampIO(opts.MaxWrite, ceiling)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.inflight = map[uint64]canceler{}
	s.mu.handles = map[uint64]*openHandle{}
	s.mu.parked = map[uint64]*openHandle{}
	s.hdrPool.New = func() any { return new([OutHeaderSize]byte) }
	s.msgPool.New = func() any { return new([OutHeaderSize + 16]byte) }
	s.iovPool.New = func() any { v := make([][]byte, 0, 1+MaxReplySlices); return &v }
	return s
}

func clampIO(n, ceiling int) int {
	if n <= 0 {
		return ceiling
	}
	return min(max(n, MinMaxIO), ceiling)
}

// Open opens /dev/cuse and returns a server for dev on it.
func Open(dev Device, opts Options) (*Server, error) {
	ch, err := OpenDevCuse(DevCuse)
	if err != nil {
		return nil, err
	}
	s, err := NewServer(ch, dev, opts)
	if err != nil {
		ch.Close()
		return nil, err
	}
	return s, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// readBufferSize is the payload part of a reader's buffer: with the
// RequestHeadSize head it meets the kernel's minimum read size.
func (s *Server) readBufferSize() int {
	return max(s.maxWrite, MinReadBuffer-RequestHeadSize)
}

// Init performs the CUSE_INIT handshake, then waits for the device node and
// applies the node options. It fails if the kernel's offer is unusable or
// the node does not appear (the name is taken, for example).
func (s *Server) Init(ctx context.Context) error {
	if s.initDone.Load() {
		return errors.New("cuse: Init called twice")
	}
	head := make([]byte, RequestHeadSize)
	rest := make([]byte, s.readBufferSize())
	n, err := s.ch.ReadRequest([][]byte{head, rest})
	if err != nil {
		return fmt.Errorf("%s: read INIT: %w", s.opts.Name, err)
	}
	req, err := ParseRequest(head[:min(n, len(head))], n)
	if err != nil {
		return fmt.Errorf("%s: INIT: %w", s.opts.Name, err)
	}
	if s.fs != nil {
		if req.Header.Opcode != OpInit {
			return fmt.Errorf("%s: first request is %s, want INIT", s.opts.Name, OpName(req.Header.Opcode))
		}
		if err := s.initFuse(&req); err != nil {
			return err
		}
		s.initDone.Store(true)
		close(s.ready)
		return nil
	}
	if req.Header.Opcode != OpCuseInit {
		return fmt.Errorf("%s: first request is %s, want CUSE_INIT", s.opts.Name, OpName(req.Header.Opcode))
	}
	if req.CuseInit.Major != KernelVersion || req.CuseInit.Minor < MinKernelMinor {
		s.reply(req.Header.Unique, syscall.EPROTO)
		return fmt.Errorf("%s: kernel offers protocol %d.%d, need %d.%d or later",
			s.opts.Name, req.CuseInit.Major, req.CuseInit.Minor, KernelVersion, MinKernelMinor)
	}
	info, _ := DevInfo(s.opts.Name) // validated by NewServer
	out := make([]byte, OutHeaderSize+CuseInitOutSize)
	encodeCuseInitOut(out[OutHeaderSize:], CuseInitOut{
		Major: KernelVersion, Minor: min(req.CuseInit.Minor, OurMinor),
		MaxRead: uint32(s.maxRead), MaxWrite: uint32(s.maxWrite),
		DevMajor: s.opts.DevMajor, DevMinor: s.opts.DevMinor,
	})
	putOutHeader(out, len(out)+len(info), 0, req.Header.Unique)
	if err := s.ch.WriteReply([][]byte{out, info}); err != nil {
		return fmt.Errorf("%s: CUSE_INIT reply: %w", s.opts.Name, err)
	}
	s.log.Debug("CUSE_INIT", "kernel", fmt.Sprintf("%d.%d", req.CuseInit.Major, req.CuseInit.Minor), "flags", req.CuseInit.Flags)
	s.initDone.Store(true)
	if err := s.node.setup(ctx); err != nil {
		return fmt.Errorf("%s: %w", s.opts.Name, err)
	}
	close(s.ready)
	return nil
}

// Ready is closed once Init has succeeded: the node exists with its mode
// and owner applied.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Serve runs Init if it has not run, then answers requests until ctx is
// cancelled, Close is called or the connection ends. On return the channel
// is closed (the kernel removes the node), every open handle has been
// released and a node the server made itself is removed. A clean shutdown
// returns nil; a dead connection returns its error.
//
// The read loop on each error: EINTR and ENOENT (the request vanished
// before we read it) read again; ENODEV (the kernel aborted the
// connection) and os.ErrClosed (Close) end serving; anything else is
// logged and ends serving.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("cuse: Serve called twice")
	}
	defer close(s.done)
	if !s.initDone.Load() {
		if err := s.Init(ctx); err != nil {
			s.shutdown()
			return err
		}
	}
	stop := context.AfterFunc(ctx, s.cancel)
	defer stop()
	s.idle.Add(1)
	s.wg.Add(1)
	go s.reader()
	<-s.ctx.Done()
	s.shutdown()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.err
}

// Close stops Serve and waits for it to return (or, if Serve never ran,
// closes the channel itself).
func (s *Server) Close() error {
	s.cancel()
	if s.serving.Load() {
		<-s.done
	} else {
		s.shutdown()
	}
	return nil
}

// shutdown closes the channel, waits for readers and handlers, releases
// what the kernel will no longer release and removes a node we made.
func (s *Server) shutdown() {
	s.shutdownOnce.Do(s.doShutdown)
}

func (s *Server) doShutdown() {
	s.cancel()
	s.mu.Lock()
	for _, c := range s.mu.inflight {
		c.cancel()
	}
	s.mu.Unlock()
	s.ch.Close()
	s.wg.Wait()
	s.mu.Lock()
	handles := s.mu.handles
	s.mu.handles = map[uint64]*openHandle{}
	s.mu.Unlock()
	for _, oh := range handles {
		s.devRelease(context.Background(), oh.h)
	}
	s.mu.Lock()
	s.node.remove()
	s.mu.Unlock()
}

// fail records why serving stopped and stops it.
func (s *Server) fail(err error) {
	s.mu.Lock()
	if s.mu.err == nil && s.ctx.Err() == nil {
		s.mu.err = err
	}
	s.mu.Unlock()
	s.cancel()
}

// buffers is one reader's memory: the fixed head and the payload area,
// possibly lent by the device (WriteBufferer), and what handling the
// request it read needs, reused so that the hot path allocates nothing.
type buffers struct {
	head []byte
	own  []byte
	ownp *[]byte // own's pointer, to put it back in the pool as it came
	lent [][]byte
	done func(used int)

	ctx reqCtx   // of a READ, WRITE or POLL
	pl  [][]byte // a WRITE's payload slices
	rr  ReadRequest
	wr  WriteRequest
	pr  PollRequest
	out [OutHeaderSize + 16]byte // a WRITE's or POLL's reply
	iov [][]byte                 // ReadRequest's scatter list
}

// scatter is the list the next request is read into.
func (b *buffers) scatter() [][]byte {
	b.iov = append(b.iov[:0], b.head)
	if b.lent != nil {
		b.iov = append(b.iov, b.lent...)
	} else {
		b.iov = append(b.iov, b.own)
	}
	return b.iov
}

// body returns a copy of what follows the in-header of an n-byte request
// (for the rare opcodes whose body is longer than the head holds).
func (b *buffers) body(n int) []byte {
	out := append([]byte(nil), b.head[InHeaderSize:min(n, len(b.head))]...)
	for _, p := range b.payload(max(0, n-len(b.head))) {
		out = append(out, p...)
	}
	return out
}

// payload returns the n bytes after the head as slices of the buffers.
func (b *buffers) payload(n int) [][]byte { return b.payloadInto(nil, n) }

// payloadInto is payload, appending to out.
func (b *buffers) payloadInto(out [][]byte, n int) [][]byte {
	if b.lent == nil {
		if n == 0 {
			return out
		}
		return append(out, b.own[:n])
	}
	for _, p := range b.lent {
		if n == 0 {
			break
		}
		k := min(n, len(p))
		out = append(out, p[:k])
		n -= k
	}
	return out
}

// reader is one request-reading goroutine:
// when the last idle reader takes a request it starts another before
// handling it, so a handler that blocks never stops INTERRUPT from being
// read; when enough readers are idle, a finished one exits.
func (s *Server) reader() {
	defer s.wg.Done()
	size := s.readBufferSize()
	bufs := &buffers{head: make([]byte, RequestHeadSize)}
	defer func() {
		s.giveBack(bufs, 0)
		s.putBuffer(bufs)
	}()
	for {
		if wb := s.writeBufferer(); wb != nil && bufs.lent == nil {
			lent, done := s.devWriteBuffer(wb, size)
			if total(lent) >= size {
				bufs.lent, bufs.done = lent, done
			} else if done != nil {
				s.devBuffersDone(done, 0)
			}
		}
		if bufs.lent == nil && bufs.own == nil {
			s.getBuffer(bufs)
		}
		n, err := s.ch.ReadRequest(bufs.scatter())
		if s.idle.Add(-1) == 0 && err == nil {
			s.idle.Add(1)
			s.wg.Add(1)
			go s.reader()
		}
		switch {
		case err == nil:
			s.handle(bufs, n)
		case errors.Is(err, syscall.EINTR), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EAGAIN):
		case errors.Is(err, os.ErrClosed), s.ctx.Err() != nil:
			return
		case errors.Is(err, syscall.ENODEV):
			s.log.Info("connection ended by the kernel (ENODEV)")
			s.fail(fmt.Errorf("%s: %w", s.opts.Name, err))
			return
		default:
			s.log.Error("read request", "err", err)
			s.fail(fmt.Errorf("%s: read request: %w", s.opts.Name, err))
			return
		}
		if s.idle.Load() >= maxIdleReaders || s.ctx.Err() != nil {
			return
		}
		s.idle.Add(1)
	}
}

// writeBufferer is the device's WriteBufferer for CUSE, or the one a
// Dir was given (SetBuffers), or nil.
func (s *Server) writeBufferer() WriteBufferer {
	if s.fs != nil {
		wb, _ := s.buffers.Load().(WriteBufferer)
		return wb
	}
	wb, _ := s.dev.(WriteBufferer)
	return wb
}

// getBuffer and putBuffer recycle readers' own payload buffers.
func (s *Server) getBuffer(bufs *buffers) {
	if p, ok := s.bufPool.Get().(*[]byte); ok {
		bufs.own, bufs.ownp = *p, p
		return
	}
	own := make([]byte, s.readBufferSize())
	bufs.own, bufs.ownp = own, &own
}

func (s *Server) putBuffer(bufs *buffers) {
	if bufs.own != nil {
		s.bufPool.Put(bufs.ownp)
		bufs.own, bufs.ownp = nil, nil
	}
}

func total(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}
