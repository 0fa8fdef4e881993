package cuse_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"tbstream/cuse"
	"tbstream/cuse/loopback"
)

// readiness waits on fd for events (POLLIN or POLLOUT) with one of the
// three interfaces and returns the events it reported (0 on timeout).
// timeout is in milliseconds (0: just ask).
type readiness func(fd int, events int16, timeout int) (int16, error)

var waiters = []struct {
	name string
	wait readiness
}{
	{"poll", waitPoll},
	{"select", waitSelect},
	{"epoll", waitEpoll},
}

// ready asks w without waiting.
func ready(t *testing.T, w readiness, fd int, events int16) int16 {
	t.Helper()
	rev, err := w(fd, events, 0)
	require.NoError(t, err)
	return rev
}

// readySoon is ready for a state that must come: it waits for it (a READ's
// bytes leave the pipe only once its reply is written, a moment after the
// reader has them; the pipe's Waker then wakes the waiter).
func readySoon(t *testing.T, w readiness, fd int, events int16) int16 {
	t.Helper()
	rev, err := w(fd, events, int(dirGuard/time.Millisecond))
	require.NoError(t, err)
	return rev
}

func retryEINTR[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if !errors.Is(err, syscall.EINTR) { // the Go runtime's own signals
			return v, err
		}
	}
}

func waitPoll(fd int, events int16, timeout int) (int16, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
	n, err := retryEINTR(func() (int, error) { return unix.Poll(fds, timeout) })
	if err != nil || n == 0 {
		return 0, err
	}
	return fds[0].Revents, nil
}

func waitSelect(fd int, events int16, timeout int) (int16, error) {
	var rd, wr unix.FdSet
	if events&unix.POLLIN != 0 {
		rd.Set(fd)
	}
	if events&unix.POLLOUT != 0 {
		wr.Set(fd)
	}
	tv := unix.NsecToTimeval(int64(timeout) * int64(time.Millisecond))
	if _, err := retryEINTR(func() (int, error) { return unix.Select(fd+1, &rd, &wr, nil, &tv) }); err != nil {
		return 0, err
	}
	var rev int16
	if rd.IsSet(fd) {
		rev |= unix.POLLIN
	}
	if wr.IsSet(fd) {
		rev |= unix.POLLOUT
	}
	return rev, nil
}

// epollCtl is epoll_ctl(2) as a blocking system call. unix.EpollCtl is a
// raw one (the Go runtime does not mark the thread as in a system call),
// but adding a FUSE file makes the kernel send a POLL and wait for the
// answer: should a stop-the-world come meanwhile, it would wait for this
// thread while the server's goroutines, which would answer, are stopped.
func epollCtl(ep, op, fd int, ev *unix.EpollEvent) error {
	_, _, errno := unix.Syscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// waitEpoll registers fd with a fresh epoll instance (level-triggered)
// and waits once.
func waitEpoll(fd int, events int16, timeout int) (int16, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, err
	}
	defer unix.Close(ep)
	if err := epollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: uint32(events), Fd: int32(fd)}); err != nil {
		return 0, err
	}
	evs := make([]unix.EpollEvent, 1)
	n, err := retryEINTR(func() (int, error) { return unix.EpollWait(ep, evs, timeout) })
	if err != nil || n == 0 {
		return 0, err
	}
	return int16(evs[0].Events), nil
}

// TestDirPollReadiness: poll(2), select(2) and epoll report a fallback
// file's readiness as the device does: an empty pipe is not readable but
// writable, a full one readable but not writable.
func TestDirPollReadiness(t *testing.T) {
	for _, w := range waiters {
		t.Run(w.name, func(t *testing.T) {
			p := loopback.New(16)
			d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: p}})
			path := filepath.Join(d.Path(), "tbstream0")
			rd := openFD(t, path, unix.O_RDONLY)
			wr := openFD(t, path, unix.O_WRONLY)

			require.Zero(t, ready(t, w.wait, rd, unix.POLLIN), "empty pipe: not readable")
			require.Equal(t, int16(unix.POLLOUT), readySoon(t, w.wait, wr, unix.POLLOUT), "empty pipe: room to write")
			writeAll(t, wr, []byte("x"))
			require.Equal(t, int16(unix.POLLIN), readySoon(t, w.wait, rd, unix.POLLIN), "a byte to read")
			require.Equal(t, int16(unix.POLLOUT), readySoon(t, w.wait, wr, unix.POLLOUT), "room for 15 more")
			writeAll(t, wr, make([]byte, 15))
			require.Zero(t, ready(t, w.wait, wr, unix.POLLOUT), "full pipe: no room")
			require.Equal(t, int16(unix.POLLIN), readySoon(t, w.wait, rd, unix.POLLIN))
			n, err := unix.Read(rd, make([]byte, 64))
			require.NoError(t, err)
			require.Equal(t, 16, n)
			require.Zero(t, ready(t, w.wait, rd, unix.POLLIN), "drained: not readable again")
			require.Equal(t, int16(unix.POLLOUT), readySoon(t, w.wait, wr, unix.POLLOUT))
			require.Positive(t, d.Stats().Polls.Load())
		})
	}
}

// TestDirPollWakes: a poll(2), select(2) or epoll_wait blocked on a
// fallback file wakes when the device's readiness changes: the device
// calls its Waker, the server sends NOTIFY_POLL and the kernel wakes the
// waiter (without it the waiter would sleep until its timeout). Both
// directions: data written from another descriptor, and room made by a
// read of a full pipe.
func TestDirPollWakes(t *testing.T) {
	for _, w := range waiters {
		for _, dir := range []string{"readable", "writable"} {
			t.Run(w.name+" "+dir, func(t *testing.T) {
				p := loopback.New(16)
				d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: p}})
				path := filepath.Join(d.Path(), "tbstream0")
				rd := openFD(t, path, unix.O_RDONLY)
				wr := openFD(t, path, unix.O_WRONLY)
				fd, events := rd, int16(unix.POLLIN)
				if dir == "writable" {
					writeAll(t, wr, make([]byte, 16))
					fd, events = wr, unix.POLLOUT
				}
				polls := d.Stats().Polls.Load()
				type result struct {
					rev int16
					err error
				}
				got := make(chan result, 1)
				go func() {
					// Longer than the guard below: poll(2) and
					// select(2) ask the file once more when they
					// time out, which would hide a missing wake-up.
					rev, err := w.wait(fd, events, int(3*dirGuard/time.Millisecond))
					got <- result{rev, err}
				}()
				if w.name != "epoll" {
					// The waiter asked once and found nothing: what
					// follows must wake it. (epoll asked at
					// registration, with the same effect.)
					eventually(t, "the waiter's POLL", func() bool { return d.Stats().Polls.Load() > polls })
				}
				time.Sleep(10 * time.Millisecond) // most likely asleep by now; correct either way
				if dir == "readable" {
					writeAll(t, wr, []byte("wake"))
				} else {
					n, err := unix.Read(rd, make([]byte, 4))
					require.NoError(t, err)
					require.Equal(t, 4, n)
				}
				select {
				case r := <-got:
					require.NoError(t, r.err)
					require.Equal(t, events, r.rev, "woken by the change, not by the timeout")
				case <-time.After(dirGuard):
					// poll(2) and select(2) would ask again only at
					// 3*dirGuard: only NOTIFY_POLL wakes them before.
					// (It may not be needed: a waiter whose POLL was
					// answered after the change returns at once.)
					t.Fatalf("the waiter was not woken (NOTIFY_POLL sent: %d)", d.Stats().Notifies.Load())
				}
			})
		}
	}
}

// TestDirNonblocking: O_NONBLOCK, given to open(2) or set later with
// fcntl(2) (the server learns it per request), makes a read of an empty
// pipe and a write to a full one fail with EAGAIN instead of waiting;
// without it the read waits (parked) for the data.
func TestDirNonblocking(t *testing.T) {
	p := loopback.New(16)
	d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: p}})
	path := filepath.Join(d.Path(), "tbstream0")

	nb := openFD(t, path, unix.O_RDWR|unix.O_NONBLOCK)
	_, err := unix.Read(nb, make([]byte, 16))
	require.ErrorIs(t, err, syscall.EAGAIN, "empty pipe, O_NONBLOCK at open")
	require.Zero(t, d.Stats().Parked.Load(), "a non-blocking READ is not parked")

	n, err := unix.Write(nb, make([]byte, 32))
	require.NoError(t, err)
	require.Equal(t, 16, n, "a non-blocking write takes what fits")
	_, err = unix.Write(nb, []byte("x"))
	require.ErrorIs(t, err, syscall.EAGAIN, "full pipe, O_NONBLOCK at open")
	require.EqualValues(t, 2, d.Stats().Again.Load())
	n, err = unix.Read(nb, make([]byte, 64))
	require.NoError(t, err)
	require.Equal(t, 16, n)

	// fcntl(F_SETFL) after open: the flag arrives with each request.
	fd := openFD(t, path, unix.O_RDWR)
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, unix.O_NONBLOCK)
	require.NoError(t, err)
	_, err = unix.Read(fd, make([]byte, 16))
	require.ErrorIs(t, err, syscall.EAGAIN, "O_NONBLOCK set by fcntl")
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0)
	require.NoError(t, err)
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 16)
		n, err := unix.Read(fd, b)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b[:n])
	}()
	eventually(t, "the blocking READ parked", func() bool { return d.Stats().Parked.Load() == 1 })
	writeAll(t, nb, []byte("later"))
	select {
	case s := <-got:
		require.Equal(t, "later", s)
	case <-time.After(dirGuard):
		t.Fatal("the parked READ did not get the data")
	}
}

// TestDirBlockedReadsDoNotStarve: READs blocked on empty pipes hold no
// goroutine and no request reader: while one waits, writes to the same
// file from another descriptor and to other files of the mount complete,
// and the blocked READ then gets its bytes. With eight READs blocked on
// eight files, a ninth file keeps serving.
func TestDirBlockedReadsDoNotStarve(t *testing.T) {
	const blocked = 8
	files := map[string]cuse.File{}
	pipes := make([]*loopback.Pipe, blocked+1)
	for i := range pipes {
		pipes[i] = loopback.New(0)
		files[fmt.Sprintf("tbstream%d", i)] = cuse.File{Device: pipes[i]}
	}
	d := mountFiles(t, files)
	path := func(i int) string { return filepath.Join(d.Path(), fmt.Sprintf("tbstream%d", i)) }

	type result struct {
		i    int
		data string
		err  error
	}
	results := make(chan result, blocked)
	for i := range blocked {
		fd := openFD(t, path(i), unix.O_RDONLY)
		go func() {
			b := make([]byte, 64)
			n, err := unix.Read(fd, b)
			results <- result{i, string(b[:max(n, 0)]), err}
		}()
	}
	eventually(t, "every READ parked", func() bool { return d.Stats().Parked.Load() == blocked })

	fd := openFD(t, path(blocked), unix.O_RDWR)
	within(t, "writes and reads on the ninth file", func() error {
		msg := bytes.Repeat([]byte("n"), 4096)
		for range 50 {
			if err := writeFull(fd, msg); err != nil {
				return err
			}
			if n, err := unix.Read(fd, make([]byte, 8192)); err != nil || n != len(msg) {
				return fmt.Errorf("read(2): %d bytes, %v", n, err)
			}
		}
		return nil
	})
	select {
	case r := <-results:
		t.Fatalf("READ %d returned with nothing written: %q %v", r.i, r.data, r.err)
	default:
	}

	// Writes to the files the READs wait on, from other descriptors:
	// they complete, and each READ gets its own file's bytes.
	wfds := make([]int, blocked)
	for i := range wfds {
		wfds[i] = openFD(t, path(i), unix.O_WRONLY)
	}
	within(t, "writes to the blocked files", func() error {
		for i, fd := range wfds {
			if err := writeFull(fd, []byte(fmt.Sprintf("to %d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	for range blocked {
		select {
		case r := <-results:
			require.NoError(t, r.err)
			require.Equal(t, fmt.Sprintf("to %d", r.i), r.data)
		case <-time.After(dirGuard):
			t.Fatal("a blocked READ did not get its bytes")
		}
	}
	for i := range blocked {
		// Done, which frees the bytes, follows the reply.
		eventually(t, fmt.Sprintf("pipe %d drained", i), func() bool { return pipes[i].Buffered() == 0 })
	}
}

// TestDirManyReadersOneFile: READs parked on several descriptors of one
// pipe are all served, each byte once, as bytes come one by one.
func TestDirManyReadersOneFile(t *testing.T) {
	const readers = 6
	d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: loopback.New(0)}})
	path := filepath.Join(d.Path(), "tbstream0")
	got := make(chan byte, readers)
	var wg sync.WaitGroup
	for range readers {
		fd := openFD(t, path, unix.O_RDONLY)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			if n, err := unix.Read(fd, b); err == nil && n == 1 {
				got <- b[0]
			}
		}()
	}
	eventually(t, "every READ parked", func() bool { return d.Stats().Parked.Load() == readers })
	wr := openFD(t, path, unix.O_WRONLY)
	seen := map[byte]bool{}
	for i := range readers {
		writeAll(t, wr, []byte{byte('a' + i)})
		select {
		case b := <-got:
			require.False(t, seen[b], "byte %q read twice", b)
			seen[b] = true
		case <-time.After(dirGuard):
			t.Fatalf("no READ got byte %d", i)
		}
	}
	wg.Wait()
	require.Len(t, seen, readers)
}
