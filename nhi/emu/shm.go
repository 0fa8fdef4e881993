package emu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A shared-memory cable carries the cable frames of two daemons on one
// machine through two byte rings in a memfd both map, instead of through
// the unix socket they met on: no syscall and no kernel copy per batch,
// and a futex wake-up only when the other side sleeps. The framing is the
// socket cable's, byte for byte; only the transport differs.
//
// Layout of the memfd (shmRingSize = R, a power of two):
//
//	offset        size  content
//	0             4096  control page: one shmRingCtl per ring, 256 bytes apart
//	4096          R     ring 0: listener → dialer
//	4096 + R      R     ring 1: dialer → listener
//
// Each ring is mapped twice, back to back, so that any R bytes from any
// position are contiguous in memory: a frame that crosses the end of the
// ring is read and written in one piece.
const (
	shmRingSize    = 2 << 20
	shmCtlSize     = 4096
	shmCtlStride   = 256
	shmFileSize    = shmCtlSize + 2*shmRingSize
	shmWaitTimeout = time.Second // a sleeper re-checks this often anyway
	// shmSpin bounds how long a reader or writer polls the ring before
	// it sleeps on the futex: long enough to catch the next batch of a
	// transfer in flight, short enough not to steal a core from the
	// processes it waits for.
	shmSpin = 20 * time.Microsecond
)

// Futex operations (linux/futex.h). The rings live in a shared mapping,
// so the private variants cannot be used.
const (
	futexWait = 0 // FUTEX_WAIT
	futexWake = 1 // FUTEX_WAKE
)

// shmRingCtl is one ring's shared state. Positions count bytes modulo
// 2^32; prod - cons is what the ring holds. Each side only stores its own
// position and its own sleeping flag.
type shmRingCtl struct {
	prod    atomic.Uint32 // bytes written and published by the writer
	_       [60]byte
	cons    atomic.Uint32 // bytes the reader is done with
	_       [60]byte
	rsleeps atomic.Uint32 // 1 while the reader may sleep on prod
	_       [60]byte
	wsleeps atomic.Uint32 // 1 while the writer may sleep on cons
}

func futex(addr *atomic.Uint32, op int, val uint32, timeout time.Duration) {
	var ts *unix.Timespec
	if op == futexWait {
		t := unix.NsecToTimespec(int64(timeout))
		ts = &t
	}
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), uintptr(op), uintptr(val), uintptr(unsafe.Pointer(ts)), 0, 0)
}

// shmMap is one process's mapping of a cable's memfd.
type shmMap struct {
	ctl   []byte    // the control page
	rings [2][]byte // each 2R long: the ring mapped twice
	areas [][]byte  // what to unmap
	refs  atomic.Int32
}

// newShmFile creates the memfd of a cable, sized and sealed against
// shrinking (a peer that truncated it would make the other fault).
func newShmFile() (int, error) {
	fd, err := unix.MemfdCreate("tbstream-cable", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, shmFileSize); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("size the cable memfd: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("seal the cable memfd: %w", err)
	}
	return fd, nil
}

// mapShm maps a cable memfd after checking that it is one: a memfd of
// the expected size that cannot shrink.
func mapShm(fd int) (*shmMap, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat the cable memfd: %w", err)
	}
	if st.Size != shmFileSize {
		return nil, fmt.Errorf("cable memfd of %d bytes, want %d: %w", st.Size, shmFileSize, ErrMalformed)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_SHRINK == 0 {
		return nil, fmt.Errorf("cable memfd not sealed against shrinking (seals %#x, %v): %w", seals, err, ErrMalformed)
	}
	m := &shmMap{}
	ctl, err := unix.Mmap(fd, 0, shmCtlSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the cable memfd: %w", err)
	}
	m.ctl, m.areas = ctl, append(m.areas, ctl)
	for i := range m.rings {
		ring, err := mapTwice(fd, int64(shmCtlSize+i*shmRingSize), shmRingSize)
		if err != nil {
			m.unmap()
			return nil, fmt.Errorf("map cable ring %d: %w", i, err)
		}
		m.rings[i], m.areas = ring, append(m.areas, ring)
	}
	m.refs.Store(3) // the reader, the writer and the socket's watcher
	return m, nil
}

// mapTwice maps size bytes of fd at off twice, back to back: it reserves
// 2·size of address space, then maps the file over both halves.
func mapTwice(fd int, off int64, size int) ([]byte, error) {
	base, err := unix.MmapPtr(-1, 0, nil, uintptr(2*size), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	for half := range 2 {
		addr := unsafe.Add(base, half*size)
		if _, err := unix.MmapPtr(fd, off, addr, uintptr(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
			unix.MunmapPtr(base, uintptr(2*size))
			return nil, err
		}
	}
	return unsafe.Slice((*byte)(base), 2*size), nil
}

func (m *shmMap) unmap() {
	for _, a := range m.areas {
		unix.Munmap(a)
	}
	m.areas = nil
}

// release drops one user of the mapping; the last unmaps it.
func (m *shmMap) release() {
	if m.refs.Add(-1) == 0 {
		m.unmap()
	}
}

func (m *shmMap) ringCtl(i int) *shmRingCtl {
	return (*shmRingCtl)(unsafe.Pointer(&m.ctl[i*shmCtlStride]))
}

// shmEnds returns this end's writer and reader: the listener writes ring
// 0 and reads ring 1, the dialer the other way round.
func (m *shmMap) ends(role cableRole, closed *atomic.Bool) (*shmWriter, *shmReader) {
	out, in := 0, 1
	if role == roleDialer {
		out, in = 1, 0
	}
	w := &shmWriter{m: m, ctl: m.ringCtl(out), data: m.rings[out], closed: closed}
	r := &shmReader{m: m, ctl: m.ringCtl(in), data: m.rings[in], closed: closed}
	w.pos = w.ctl.prod.Load()
	r.pos = r.ctl.cons.Load()
	return w, r
}

// errShmClosed ends the I/O of a shared-memory cable that was closed.
var errShmClosed = net.ErrClosed

// waitFor polls cond for up to shmSpin, then sleeps on word (whose value
// was seen) with the sleeping flag set, until cond holds or the cable
// closes. The flag is set before cond is checked again, and the other
// side stores the word before it reads the flag, so a wake-up cannot be
// missed.
func waitFor(cond func() bool, word *atomic.Uint32, sleeping *atomic.Uint32, closed *atomic.Bool) error {
	if cond() {
		return nil // the common case in a transfer: no clock read
	}
	start := time.Now()
	for i := 0; ; i++ {
		if cond() {
			return nil
		}
		if closed.Load() {
			return errShmClosed
		}
		if i%64 == 63 && time.Since(start) > shmSpin {
			break
		}
		runtime.Gosched()
	}
	for {
		seen := word.Load()
		sleeping.Store(1)
		if cond() {
			sleeping.Store(0)
			return nil
		}
		if closed.Load() {
			sleeping.Store(0)
			return errShmClosed
		}
		futex(word, futexWait, seen, shmWaitTimeout)
		sleeping.Store(0)
	}
}

// shmWriter writes one ring. Bytes become visible to the reader at Flush
// (or when the ring fills), so frames travel in the batches the engine
// makes, as with a buffered socket. Not safe for concurrent use (the
// cable's write lock serializes it).
type shmWriter struct {
	m      *shmMap
	ctl    *shmRingCtl
	data   []byte
	pos    uint32 // written, not yet published beyond ctl.prod
	closed *atomic.Bool
}

// Write copies p into the ring, waiting for the reader to make room.
func (w *shmWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		used := w.pos - w.ctl.cons.Load()
		if used > shmRingSize {
			return n, fmt.Errorf("shared-memory ring: the peer consumed %d bytes more than were written: %w", -int32(used), ErrMalformed)
		}
		free := shmRingSize - int(used)
		if free == 0 {
			w.publish()
			err := waitFor(func() bool { return w.pos-w.ctl.cons.Load() < shmRingSize }, &w.ctl.cons, &w.ctl.wsleeps, w.closed)
			if err != nil {
				return n, err
			}
			continue
		}
		off := int(w.pos % shmRingSize)
		k := copy(w.data[off:off+min(free, len(p))], p)
		w.pos += uint32(k)
		p, n = p[k:], n+k
	}
	return n, nil
}

// Buffered is what was written and not yet published.
func (w *shmWriter) Buffered() int { return int(w.pos - w.ctl.prod.Load()) }

// Flush publishes what was written and wakes the reader if it sleeps.
func (w *shmWriter) Flush() error {
	if w.closed.Load() {
		return errShmClosed
	}
	w.publish()
	return nil
}

func (w *shmWriter) publish() {
	if w.ctl.prod.Load() == w.pos {
		return
	}
	w.ctl.prod.Store(w.pos)
	if w.ctl.rsleeps.Load() != 0 {
		futex(&w.ctl.prod, futexWake, 1, 0)
	}
}

// shmReader reads one ring with the peeking interface of a bufio.Reader
// (cableReader): Peek returns bytes in the ring itself, valid until the
// next Peek, which is when the bytes Discard skipped are given back to
// the writer.
type shmReader struct {
	m      *shmMap
	ctl    *shmRingCtl
	data   []byte
	pos    uint32 // consumed, not yet given back beyond ctl.cons
	closed *atomic.Bool
}

// Peek returns the next n bytes, waiting for them. At a close it returns
// what there is and io.EOF.
func (r *shmReader) Peek(n int) ([]byte, error) {
	if n > shmRingSize {
		return nil, fmt.Errorf("peek %d bytes of a %d-byte ring: %w", n, shmRingSize, io.ErrShortBuffer)
	}
	if r.ctl.cons.Load() != r.pos {
		r.ctl.cons.Store(r.pos)
		if r.ctl.wsleeps.Load() != 0 {
			futex(&r.ctl.cons, futexWake, 1, 0)
		}
	}
	err := waitFor(func() bool { return r.Buffered() >= n }, &r.ctl.prod, &r.ctl.rsleeps, r.closed)
	off := int(r.pos % shmRingSize)
	if err != nil {
		return r.data[off : off+min(n, r.Buffered())], io.EOF
	}
	return r.data[off : off+n], nil
}

// Discard skips n bytes Peek returned.
func (r *shmReader) Discard(n int) (int, error) {
	n = min(n, r.Buffered())
	r.pos += uint32(n)
	return n, nil
}

// Buffered is what the writer published and this end has not consumed.
// A writer that publishes more than the ring (a broken or hostile peer)
// is seen as having published the whole ring, never more.
func (r *shmReader) Buffered() int { return min(int(r.ctl.prod.Load()-r.pos), shmRingSize) }

// Size is the most Peek can return.
func (r *shmReader) Size() int { return shmRingSize }

// wake wakes this end's sleepers, for a close.
func (r *shmReader) wake() { futex(&r.ctl.prod, futexWake, 1, 0) }
func (w *shmWriter) wake() { futex(&w.ctl.cons, futexWake, 1, 0) }

// ---- passing the memfd ----

// fdConn is a unix socket connection whose reads also receive the file
// descriptors the peer passes (SCM_RIGHTS): a plain read would have the
// kernel close them. It keeps the last one.
type fdConn struct {
	*net.UnixConn
	oob [64]byte // room for a few descriptors; one reader at a time
	mu  sync.Mutex
	fds []int
}

func (c *fdConn) Read(p []byte) (int, error) {
	n, oobn, _, _, err := c.ReadMsgUnix(p, c.oob[:])
	oob := c.oob[:]
	if oobn > 0 {
		c.keep(oob[:oobn])
	}
	return max(n, 0), err // ReadMsgUnix may give -1 with an error
}

func (c *fdConn) keep(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		c.fds = append(c.fds, fds...)
	}
}

// takeFD returns the one descriptor received so far; more than one (or
// none) is an error, and every descriptor received is then closed.
func (c *fdConn) takeFD() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fds := c.fds
	c.fds = nil
	if len(fds) == 1 {
		return fds[0], nil
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	return -1, fmt.Errorf("%d file descriptors with the shared-memory offer, want 1: %w", len(fds), ErrMalformed)
}

// closeFDs closes descriptors received and not taken.
func (c *fdConn) closeFDs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.fds = nil
}

// sendShm passes fd to the peer with the SHM frame.
func sendShm(conn *net.UnixConn, fd int) error {
	frame := appendCableFrame(nil, cableFrame{Kind: CableShm, Payload: shmOfferPayload()})
	n, _, err := conn.WriteMsgUnix(frame, unix.UnixRights(fd), nil)
	if err == nil && n != len(frame) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("send the shared-memory offer: %w", err)
	}
	return nil
}

// watchSocket waits for the unix socket of a shared-memory cable to end
// (the peer closed it or died) and then ends the cable's waits: the read
// loop delivers what the peer had published, then unplugs. The peer sends
// nothing on the socket after the handshake: a byte is a broken peer.
func (e *streamEnd) watchSocket() {
	var b [1]byte
	n, err := e.conn.Read(b[:])
	switch {
	case n > 0:
		e.host.counters.cableMalformed.Add(1)
		e.host.log.Warn("emu: cable closed: data on the socket of a shared-memory cable", "adapter", e.cable.port.Adapter)
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET):
		e.host.log.Info("emu: cable socket failed", "adapter", e.cable.port.Adapter, "err", err)
	}
	e.closed.Store(true)
	e.shmR.wake()
	e.shmW.wake()
	e.shm.release()
}
