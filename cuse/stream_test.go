package cuse_test

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/loopback"
)

// TestStreamThroughPipe is dd through the fake kernel: a writer and a
// reader at once, each request up to max_write, many times the pipe's
// capacity, bytes checked at the end.
func TestStreamThroughPipe(t *testing.T) {
	r := start(t, loopback.New(256<<10), cuse.Options{})
	k, ctx := r.k, r.ctx
	w, err := k.Open(ctx, syscall.O_WRONLY)
	require.NoError(t, err)
	rd, err := k.Open(ctx, syscall.O_RDONLY)
	require.NoError(t, err)

	const total = 8 << 20
	src := make([]byte, total)
	rand.NewChaCha8([32]byte{1}).Read(src)
	errc := make(chan error, 1)
	go func() {
		for off := 0; off < total; {
			n, err := k.Write(ctx, w, src[off:min(total, off+cuse.DefaultMaxIO)], 0)
			if err != nil {
				errc <- err
				return
			}
			off += n
		}
		errc <- k.Release(ctx, w)
	}()
	var got bytes.Buffer
	for {
		b, err := k.Read(ctx, rd, cuse.DefaultMaxIO, 0)
		require.NoError(t, err)
		if len(b) == 0 {
			break
		}
		got.Write(b)
	}
	require.NoError(t, <-errc)
	require.Equal(t, sha256.Sum256(src), sha256.Sum256(got.Bytes()), "%d bytes read of %d", got.Len(), total)
}
