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
	ch   Channel
	dev  Device
	opts Options
	log  *slog.Logger

	maxRead, maxWrite int
	node              node // its made flag is guarded by mu
	initDone          atomic.Bool

	ctx    context.Context // cancelled by Close; parent of every request context
	cancel context.CancelFunc
	wg     sync.WaitGroup // readers and the handlers they run
	idle   atomic.Int32   // readers waiting for a request

	mu struct {
		sync.Mutex
		inflight map[uint64]context.CancelFunc // unique → cancel, for INTERRUPT
		handles  map[uint64]*openHandle        // fh → handle
		nextFh   uint64
		err      error // why serving stopped
	}
	bufPool      sync.Pool // *[]byte of readBufferSize: readers come and go
	stats        Stats
	serving      atomic.Bool   // Serve has started
	ready        chan struct{} // closed when Init has succeeded
	done         chan struct{} // closed when Serve has returned
	shutdownOnce sync.Once
}

// openHandle is the server's state for one fh. kh and armed are guarded by
// Server.mu.
type openHandle struct {
	h     Handle
	kh    uint64 // the kernel's poll handle, once a POLL asked for notification
	armed bool   // a NOTIFY_POLL is owed on the next readiness change
}

// Stats counts what the server did; read it with Server.Stats.
type Stats struct {
	Requests       atomic.Uint64 // requests read, all opcodes
	Reads, Writes  atomic.Uint64
	ReadBytes      atomic.Uint64
	WriteBytes     atomic.Uint64
	Polls          atomic.Uint64
	Notifies       atomic.Uint64 // NOTIFY_POLL sent
	Interrupts     atomic.Uint64 // INTERRUPT that cancelled a request
	InterruptRetry atomic.Uint64 // INTERRUPT answered EAGAIN (target not known yet)
	Again          atomic.Uint64 // requests answered EAGAIN (non-blocking)
	Unknown        atomic.Uint64 // opcodes answered ENOSYS
	Malformed      atomic.Uint64 // requests that failed to parse
	Stale          atomic.Uint64 // replies the kernel refused with ENOENT
	Refused        atomic.Uint64 // replies the kernel refused with EINVAL
	Panics         atomic.Uint64 // panics recovered (device calls answered EIO)
}

// NewServer prepares a server for dev on ch. Nothing is sent until Init or
// Serve.
func NewServer(ch Channel, dev Device, opts Options) (*Server, error) {
	if _, err := DevInfo(opts.Name); err != nil {
		return nil, err
	}
	s := &Server{ch: ch, dev: dev, opts: opts, log: opts.Logger, done: make(chan struct{}), ready: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("dev", opts.Name)
	s.maxRead = clampIO(opts.MaxRead)
	s.maxWrite = clampIO(opts.MaxWrite)
	s.node = newNode(opts.Name, opts.Node)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.inflight = map[uint64]context.CancelFunc{}
	s.mu.handles = map[uint64]*openHandle{}
	return s, nil
}

func clampIO(n int) int {
	if n <= 0 {
		return DefaultMaxIO
	}
	return max(n, MinMaxIO)
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
		return fmt.Errorf("%s: read CUSE_INIT: %w", s.opts.Name, err)
	}
	req, err := ParseRequest(head[:min(n, len(head))], n)
	if err != nil {
		return fmt.Errorf("%s: CUSE_INIT: %w", s.opts.Name, err)
	}
	if req.Header.Opcode != OpCuseInit {
		return fmt.Errorf("%s: first request is %s, want CUSE_INIT", s.opts.Name, OpName(req.Header.Opcode))
	}
	if req.Init.Major != KernelVersion || req.Init.Minor < MinKernelMinor {
		s.reply(req.Header.Unique, syscall.EPROTO)
		return fmt.Errorf("%s: kernel offers protocol %d.%d, need %d.%d or later",
			s.opts.Name, req.Init.Major, req.Init.Minor, KernelVersion, MinKernelMinor)
	}
	info, _ := DevInfo(s.opts.Name) // validated by NewServer
	out := make([]byte, OutHeaderSize+CuseInitOutSize)
	encodeCuseInitOut(out[OutHeaderSize:], CuseInitOut{
		Major: KernelVersion, Minor: min(req.Init.Minor, OurMinor),
		MaxRead: uint32(s.maxRead), MaxWrite: uint32(s.maxWrite),
		DevMajor: s.opts.DevMajor, DevMinor: s.opts.DevMinor,
	})
	putOutHeader(out, len(out)+len(info), 0, req.Header.Unique)
	if err := s.ch.WriteReply([][]byte{out, info}); err != nil {
		return fmt.Errorf("%s: CUSE_INIT reply: %w", s.opts.Name, err)
	}
	s.log.Debug("CUSE_INIT", "kernel", fmt.Sprintf("%d.%d", req.Init.Major, req.Init.Minor), "flags", req.Init.Flags)
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
// possibly lent by the device (WriteBufferer).
type buffers struct {
	head []byte
	own  []byte
	lent [][]byte
	done func(used int)
}

func (b *buffers) iov() [][]byte {
	if b.lent != nil {
		return append([][]byte{b.head}, b.lent...)
	}
	return [][]byte{b.head, b.own}
}

// payload returns the n bytes after the head as slices of the buffers.
func (b *buffers) payload(n int) [][]byte {
	src := b.lent
	if src == nil {
		src = [][]byte{b.own}
	}
	var out [][]byte
	for _, p := range src {
		if n == 0 {
			break
		}
		k := min(n, len(p))
		out = append(out, p[:k])
		n -= k
	}
	return out
}

// reader is one request-reading goroutine (go-fuse's reader pool idea):
// when the last idle reader takes a request it starts another before
// handling it, so a handler that blocks never stops INTERRUPT from being
// read; when enough readers are idle, a finished one exits.
func (s *Server) reader() {
	defer s.wg.Done()
	wb, _ := s.dev.(WriteBufferer)
	size := s.readBufferSize()
	bufs := &buffers{head: make([]byte, RequestHeadSize)}
	defer func() {
		s.giveBack(bufs, 0)
		s.putBuffer(bufs)
	}()
	for {
		if wb != nil && bufs.lent == nil {
			lent, done := s.devWriteBuffer(wb, size)
			if total(lent) >= size {
				bufs.lent, bufs.done = lent, done
			} else if done != nil {
				s.devBuffersDone(done, 0)
			}
		}
		if bufs.lent == nil && bufs.own == nil {
			bufs.own = s.getBuffer()
		}
		n, err := s.ch.ReadRequest(bufs.iov())
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

// getBuffer and putBuffer recycle readers' own payload buffers.
func (s *Server) getBuffer() []byte {
	if p, ok := s.bufPool.Get().(*[]byte); ok {
		return *p
	}
	return make([]byte, s.readBufferSize())
}

func (s *Server) putBuffer(bufs *buffers) {
	if own := bufs.own; own != nil {
		bufs.own = nil
		s.bufPool.Put(&own)
	}
}

func total(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}
