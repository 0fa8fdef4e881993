package emu

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// shmPair maps one cable memfd twice, as the two processes of a cable
// would, and returns the listener's and the dialer's ends.
func shmPair(t *testing.T) (lw *shmWriter, lr *shmReader, dw *shmWriter, dr *shmReader, closed *atomic.Bool) {
	t.Helper()
	fd, err := newShmFile()
	require.NoError(t, err)
	defer unix.Close(fd)
	ml, err := mapShm(fd)
	require.NoError(t, err)
	md, err := mapShm(fd)
	require.NoError(t, err)
	t.Cleanup(func() { ml.unmap(); md.unmap() })
	closed = new(atomic.Bool)
	lw, lr = ml.ends(roleListener, closed)
	dw, dr = md.ends(roleDialer, closed)
	return lw, lr, dw, dr, closed
}

// TestShmRingStream: bytes written in pieces of random sizes, flushed at
// random points, come out of the other mapping unchanged and in order,
// through many wrap-arounds of the ring; a read of a piece that crosses
// the end of the ring is one contiguous slice (the double mapping).
func TestShmRingStream(t *testing.T) {
	lw, _, _, dr, _ := shmPair(t)
	const total = 5*shmRingSize + 12345
	src := make([]byte, total)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(3, 4))
		for off := 0; off < total; {
			n := min(1+rng.IntN(3*minReaderSize), total-off)
			_, err := lw.Write(src[off : off+n])
			if err != nil {
				t.Error(err)
				return
			}
			off += n
			if rng.IntN(4) == 0 || off == total {
				lw.Flush()
			}
		}
	}()
	got := make([]byte, 0, total)
	crossed := 0
	for len(got) < total {
		n := min(1+rng.IntN(minReaderSize), total-len(got))
		p, err := dr.Peek(n)
		require.NoError(t, err)
		require.Len(t, p, n)
		if int(dr.pos%shmRingSize)+n > shmRingSize {
			crossed++
		}
		got = append(got, p...)
		dr.Discard(n)
	}
	wg.Wait()
	require.True(t, bytes.Equal(src, got), "the bytes differ")
	require.NotZero(t, crossed, "no read crossed the end of the ring")
}

// TestShmRingCloseDrains: after a close the reader still gets what was
// published, then io.EOF with what is left of a partial frame; a writer
// waiting for room returns the close.
func TestShmRingCloseDrains(t *testing.T) {
	lw, _, _, dr, closed := shmPair(t)
	_, err := lw.Write([]byte("published"))
	require.NoError(t, err)
	lw.Flush()
	_, err = lw.Write([]byte("never published"))
	require.NoError(t, err)
	closed.Store(true)
	dr.wake()
	p, err := dr.Peek(9)
	require.NoError(t, err)
	require.Equal(t, "published", string(p))
	dr.Discard(9)
	p, err = dr.Peek(4)
	require.ErrorIs(t, err, io.EOF)
	require.Empty(t, p)

	// A full ring and a closed cable: the writer does not wait forever.
	lw2, _, _, _, closed2 := shmPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := lw2.Write(make([]byte, shmRingSize+1))
		done <- err
	}()
	closed2.Store(true)
	lw2.wake()
	require.ErrorIs(t, <-done, errShmClosed)
}

// TestShmRingHostilePeer: a peer that moves the shared positions where
// they cannot be makes this end fail cleanly, never read or write outside
// the ring: a consumer beyond the producer is malformed for the writer, a
// producer far beyond the consumer is at most a full ring of garbage for
// the reader (which the framing then refuses).
func TestShmRingHostilePeer(t *testing.T) {
	lw, _, _, dr, _ := shmPair(t)
	lw.ctl.cons.Store(lw.pos + 100) // "consumed" 100 bytes never written
	_, err := lw.Write([]byte("x"))
	require.ErrorIs(t, err, ErrMalformed)

	dr.ctl.prod.Store(dr.pos + 3*shmRingSize)
	require.Equal(t, shmRingSize, dr.Buffered())
	p, err := dr.Peek(minReaderSize)
	require.NoError(t, err)
	require.Len(t, p, minReaderSize)
	_, err = readCableFrame(dr) // zeros: kind 0 is no frame
	require.ErrorIs(t, err, ErrMalformed)
}

// TestShmFileChecked: a memfd of another size, or one that can shrink
// (the peer could truncate it under this end and make it fault), is
// refused before it is mapped.
func TestShmFileChecked(t *testing.T) {
	fd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Ftruncate(fd, shmFileSize))
	_, err = mapShm(fd)
	require.ErrorIs(t, err, ErrMalformed, "an unsealed memfd was mapped")

	fd2, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	require.NoError(t, err)
	defer unix.Close(fd2)
	require.NoError(t, unix.Ftruncate(fd2, shmFileSize/2))
	_, err = unix.FcntlInt(uintptr(fd2), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK)
	require.NoError(t, err)
	_, err = mapShm(fd2)
	require.True(t, errors.Is(err, ErrMalformed), "a memfd of half the size was mapped: %v", err)
}
