package emu_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/emu"
)

// TestShmCloseDeliversPublished: frames the sender's engine put in the
// shared ring before its end closed still reach the receiver's RX ring,
// in order, as the frames before a socket cable's UNPLUG do; then both
// hosts see the unplug.
func TestShmCloseDeliversPublished(t *testing.T) {
	f := newFabric(t, "shm")
	const frames = 24
	s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: 64})
	s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: 64})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for i := range frames {
		_, err := s1.tx.Write(ctx, pattern(make([]byte, nhi.MaxFrameSize), i), pdfFrameStart, pdfData)
		require.NoError(t, err)
	}
	require.NoError(t, s1.tx.Flush(ctx)) // every frame left host1's engine
	require.NoError(t, f.cable1.Close())
	for i := range frames {
		_, got := readFrame(t, s2.rx, waitLong)
		require.True(t, bytes.Equal(pattern(make([]byte, nhi.MaxFrameSize), i), got), "frame %d", i)
	}
	waitEvent(t, f.host1, true)
	waitEvent(t, f.host2, true)
}

// fakeShmListener plays a listener that offers shared memory in its hello
// and answers the dialer's offer with answer (a SHM frame, or whatever
// the test makes up), passing no memfd; it returns the socket's path.
func fakeShmListener(t *testing.T, answer []byte) string {
	path := filepath.Join(t.TempDir(), "cable.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write(rawHello(emu.CableVersion, 1<<1, 0x1234))
		hdr := make([]byte, emu.CableHeaderSize+80)
		if _, err := io.ReadFull(conn, hdr); err != nil {
			return
		}
		conn.Write(answer)
		io.Copy(io.Discard, conn) // until the dialer hangs up
	}()
	return path
}

// TestShmDeclinedOrBroken: a listener that declines shared memory (ring
// size 0) gets a socket cable; one that accepts but passes no memfd, or
// names rings of another size, is refused as malformed.
func TestShmDeclinedOrBroken(t *testing.T) {
	shmFrame := func(size uint32) []byte {
		return append([]byte{byte(emu.CableShm), 0, 0, 0, 0, 4, 0, 0}, binary.BigEndian.AppendUint32(nil, size)...)
	}
	for _, tc := range []struct {
		name   string
		answer []byte
		ok     bool
	}{
		{"declined", shmFrame(0), true},
		{"no memfd", shmFrame(2 << 20), false},
		{"other size", shmFrame(1 << 20), false},
		{"a data frame instead", append([]byte{byte(emu.CableData), 0x12, 0, 8, 0, 1, 0, 0}, 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHostFor(t, "shm", "host1")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := h.emu.Dial(ctx, "unix", fakeShmListener(t, tc.answer), emu.Port{Adapter: 1})
			if !tc.ok {
				require.ErrorIs(t, err, emu.ErrMalformed)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			require.False(t, c.SharedMemory())
		})
	}
}
