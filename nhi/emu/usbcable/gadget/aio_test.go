package gadget

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu/usbcable"
)

// The AIO structs must have the kernel's sizes (aio_abi.h: 64 and 32
// bytes), or io_submit reads garbage.
func TestAIOLayout(t *testing.T) {
	assert.EqualValues(t, 64, unsafe.Sizeof(iocb{}))
	assert.EqualValues(t, 32, unsafe.Sizeof(ioEvent{}))
	assert.EqualValues(t, 8, unsafe.Offsetof(iocb{}.key))
	assert.EqualValues(t, 16, unsafe.Offsetof(iocb{}.opcode))
	assert.EqualValues(t, 20, unsafe.Offsetof(iocb{}.fildes))
	assert.EqualValues(t, 24, unsafe.Offsetof(iocb{}.buf))
	assert.EqualValues(t, 56, unsafe.Offsetof(iocb{}.flags))
}

// testSession is a session whose "endpoints" are fds of the test's
// choosing: the AIO path is FunctionFS's but for the file behind it.
func testSession(in, out int) *session {
	return &session{g: &Gadget{in: in, out: out}, ended: make(chan struct{})}
}

// pattern is transfer i's bytes: its index in every byte, n long.
func pattern(i, n int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, n) }

// Writes queue in order, more of them than are in flight at once, and
// each is whole; transfers of every length, ZLPs included.
func TestWriteTransfersInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer f.Close()
	s := testSession(int(f.Fd()), -1)
	var want []byte
	sizes := []int{usbcable.MaxTransfer, 1, 0, 4096, usbcable.MaxTransfer, 777, usbcable.MaxTransfer - 1, 0, 512, 3, usbcable.MaxTransfer}
	for i, n := range sizes {
		p := pattern(i, n)
		require.NoError(t, s.WriteTransfer(p), "transfer %d", i)
		want = append(want, p...)
	}
	// Drain: the last ones are checked as a later write would check them.
	for range transfersInFlight {
		require.NoError(t, s.WriteTransfer(nil))
	}
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "file holds %d bytes, want %d in order", len(got), len(want))
	s.hostEnded()
	waitClosed(t, s.wq)
}

// A write that fails (a file open read-only) ends the session: WriteTransfer
// returns an error, at once or at the write that finds the completion.
func TestWriteTransferFailureEnds(t *testing.T) {
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer f.Close()
	s := testSession(int(f.Fd()), -1)
	var werr error
	for i := 0; i < 2*transfersInFlight && werr == nil; i++ {
		werr = s.WriteTransfer(pattern(i, 100))
	}
	require.Error(t, werr)
	assert.ErrorIs(t, werr, syscall.EBADF)
	s.hostEnded()
	waitClosed(t, s.wq)
}

// Reads come back in submission order with what each read returned; the
// pipe's writer then closes and reads return 0 (as a ZLP would).
func TestReadTransfersInOrder(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	// A pipe large enough that the test's writes never block.
	_, err = unixFcntl(w.Fd(), syscall.F_SETPIPE_SZ, 1<<20)
	require.NoError(t, err)
	var want []byte
	for i := range 10 {
		want = append(want, pattern(i, 10000)...)
	}
	_, err = w.Write(want)
	require.NoError(t, err)
	w.Close()
	s := testSession(-1, int(r.Fd()))
	buf := make([]byte, usbcable.MaxTransfer)
	var got []byte
	for {
		n, err := s.ReadTransfer(buf)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		got = append(got, buf[:n]...)
	}
	assert.True(t, bytes.Equal(want, got), "read %d bytes, want %d in order", len(got), len(want))
	s.hostEnded()
	_, err = s.ReadTransfer(buf)
	assert.ErrorIs(t, err, errSessionEnded)
	waitClosed(t, s.rq)
}

func unixFcntl(fd uintptr, cmd, arg int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, uintptr(cmd), uintptr(arg))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// waitClosed waits until q's reaper destroyed its context after the
// session ended (a hang fails the test with the test binary's timeout).
func waitClosed(t *testing.T, q *aioQueue) {
	t.Helper()
	require.NotNil(t, q)
	for {
		q.mu.Lock()
		closed, n := q.closed, q.inFlight
		q.mu.Unlock()
		if closed {
			assert.Zero(t, n)
			assert.ErrorIs(t, q.submit(&q.slots[0], 1), errSessionEnded)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
