package gadget

import (
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"tbstream/nhi/emu/usbcable"
)

// Linux native AIO (include/uapi/linux/aio_abi.h), which FunctionFS
// endpoint files implement: each submitted iocb is one USB request queued
// on the endpoint, so several transfers are in flight where read(2) and
// write(2) allow one.
const (
	iocbCmdPread  = 0 // IOCB_CMD_PREAD
	iocbCmdPwrite = 1 // IOCB_CMD_PWRITE
)

// iocb is struct iocb on a little-endian machine (aio_key before
// aio_rw_flags), 64 bytes.
type iocb struct {
	data      uint64 // aio_data: the slot's index
	key       uint32 // aio_key
	rwFlags   uint32 // aio_rw_flags
	opcode    uint16 // aio_lio_opcode
	reqprio   int16  // aio_reqprio
	fildes    uint32 // aio_fildes
	buf       uint64 // aio_buf
	nbytes    uint64 // aio_nbytes
	offset    int64  // aio_offset
	reserved2 uint64 // aio_reserved2
	flags     uint32 // aio_flags
	resfd     uint32 // aio_resfd
}

// ioEvent is struct io_event.
type ioEvent struct {
	data uint64 // the iocb's aio_data
	obj  uint64 // the iocb's address
	res  int64  // bytes moved, or -errno
	res2 int64
}

// transfersInFlight is how many transfers a session keeps queued on each
// endpoint: with usbcable.MaxTransfer each, 256 KiB, one emu pass.
const transfersInFlight = 4

// reapInterval bounds how long the completion reaper sleeps without an
// event, so that it sees a session's end when nothing is in flight.
const reapInterval = 100 * time.Millisecond

// aioSlot is one transfer's iocb and buffer.
type aioSlot struct {
	index int
	cb    iocb
	buf   []byte
	res   int64         // the completion's result, set before done
	done  chan struct{} // gets a value when the transfer completes
}

// aioQueue keeps up to transfersInFlight transfers queued on one endpoint
// file for one session, in order. One goroutine submits and takes
// completions (the Conn's reader, or its writer); the queue's reaper
// goroutine collects them from the kernel. When the session has ended and
// nothing is in flight, the reaper destroys the AIO context. Transfers in
// flight when a session ends complete with an error (FunctionFS dequeues
// an endpoint's requests when it is disabled, which DISABLE, UNBIND and
// the gadget's own rebind all do; the reaper cancels them besides), so
// the reaper always gets there.
type aioQueue struct {
	fd     int
	opcode uint16
	ended  <-chan struct{} // the session's
	ctx    uint64          // aio_context_t
	slots  [transfersInFlight]aioSlot
	// pinner keeps the buffers, which the kernel fills after io_submit
	// returned, in place until the context is destroyed.
	pinner runtime.Pinner

	// Only the submitting goroutine touches these.
	fifo  [transfersInFlight]*aioSlot // in flight, oldest at head
	head  int
	count int
	free  []*aioSlot

	mu       sync.Mutex
	inFlight int
	closed   bool // the context is destroyed: no submission
}

func newAIOQueue(fd int, opcode uint16, ended <-chan struct{}) (*aioQueue, error) {
	q := &aioQueue{fd: fd, opcode: opcode, ended: ended}
	if _, _, e := syscall.Syscall(syscall.SYS_IO_SETUP, transfersInFlight, uintptr(unsafe.Pointer(&q.ctx)), 0); e != 0 {
		return nil, fmt.Errorf("io_setup: %w", e)
	}
	for i := range q.slots {
		sl := &q.slots[i]
		sl.index = i
		sl.buf = make([]byte, usbcable.MaxTransfer)
		q.pinner.Pin(unsafe.SliceData(sl.buf))
		sl.done = make(chan struct{}, 1)
		q.free = append(q.free, sl)
	}
	go q.reap()
	return q, nil
}

// submit queues sl's transfer of n bytes and puts it last in the fifo.
func (q *aioQueue) submit(sl *aioSlot, n int) error {
	sl.cb = iocb{
		data:   uint64(sl.index),
		opcode: q.opcode,
		fildes: uint32(q.fd),
		buf:    uint64(uintptr(unsafe.Pointer(unsafe.SliceData(sl.buf)))),
		nbytes: uint64(n),
	}
	cbs := [1]*iocb{&sl.cb}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return errSessionEnded
	}
	r, _, e := syscall.Syscall(syscall.SYS_IO_SUBMIT, uintptr(q.ctx), 1, uintptr(unsafe.Pointer(&cbs[0])))
	switch {
	case e != 0:
		return fmt.Errorf("io_submit: %w", e)
	case r != 1:
		return fmt.Errorf("io_submit queued %d of 1", r)
	}
	q.inFlight++
	q.fifo[(q.head+q.count)%transfersInFlight] = sl
	q.count++
	return nil
}

// oldest waits for the oldest transfer in flight to complete and takes
// it off the fifo; nil if none is in flight.
func (q *aioQueue) oldest() (*aioSlot, error) {
	if q.count == 0 {
		return nil, nil
	}
	sl := q.fifo[q.head]
	select {
	case <-sl.done:
	case <-q.ended:
		return nil, errSessionEnded
	}
	q.fifo[q.head] = nil
	q.head = (q.head + 1) % transfersInFlight
	q.count--
	return sl, nil
}

// reap hands out completions until the session has ended and nothing is
// in flight, then destroys the context.
func (q *aioQueue) reap() {
	var events [transfersInFlight]ioEvent
	cancelled := false
	for {
		q.mu.Lock()
		ended := isClosed(q.ended)
		if ended && q.inFlight == 0 {
			q.closed = true
			q.mu.Unlock()
			syscall.Syscall(syscall.SYS_IO_DESTROY, uintptr(q.ctx), 0, 0)
			q.pinner.Unpin()
			return
		}
		if ended && !cancelled {
			for i := range q.slots {
				var ev ioEvent
				syscall.Syscall(syscall.SYS_IO_CANCEL, uintptr(q.ctx), uintptr(unsafe.Pointer(&q.slots[i].cb)), uintptr(unsafe.Pointer(&ev)))
			}
			cancelled = true
		}
		q.mu.Unlock()
		ts := syscall.NsecToTimespec(reapInterval.Nanoseconds())
		r, _, e := syscall.Syscall6(syscall.SYS_IO_GETEVENTS, uintptr(q.ctx), 1, transfersInFlight,
			uintptr(unsafe.Pointer(&events[0])), uintptr(unsafe.Pointer(&ts)), 0)
		if e != 0 {
			if e != syscall.EINTR {
				// Only a broken context gets here; the session's
				// waits end with the session.
				time.Sleep(reapInterval)
			}
			continue
		}
		for _, ev := range events[:r] {
			if ev.data >= transfersInFlight {
				continue
			}
			sl := &q.slots[ev.data]
			// Under mu: the submitter's last look at the slot came
			// before its submit, which held mu.
			q.mu.Lock()
			sl.res = ev.res
			q.inFlight--
			q.mu.Unlock()
			sl.done <- struct{}{}
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// result returns a completed slot's byte count or error.
func (sl *aioSlot) result() (int, error) {
	if sl.res < 0 {
		return 0, syscall.Errno(-sl.res)
	}
	return int(sl.res), nil
}
