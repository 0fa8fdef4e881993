package cuse

import (
	"context"
	"encoding/binary"
	"os"
	"syscall"
	"testing"
)

// memChannel hands the server prepared requests and counts its replies,
// allocating nothing itself, so that a benchmark sees the server's own
// allocations.
type memChannel struct {
	reqs    chan []byte
	replies chan int32 // each reply's error field
	closed  chan struct{}
}

func newMemChannel() *memChannel {
	return &memChannel{reqs: make(chan []byte), replies: make(chan int32, 16), closed: make(chan struct{})}
}

func (c *memChannel) ReadRequest(iov [][]byte) (int, error) {
	select {
	case m := <-c.reqs:
		n := 0
		for _, b := range iov {
			n += copy(b, m[n:])
		}
		return n, nil
	case <-c.closed:
		return 0, os.ErrClosed
	}
}

func (c *memChannel) WriteReply(iov [][]byte) error {
	c.replies <- int32(binary.LittleEndian.Uint32(iov[0][4:]))
	return nil
}

func (c *memChannel) Close() error {
	close(c.closed)
	return nil
}

// sinkDevice takes every write and answers every read with the same bytes.
type sinkDevice struct{ data [][]byte }

func (d *sinkDevice) Open(context.Context, *OpenRequest) (Handle, error) { return d, nil }
func (d *sinkDevice) Read(ctx context.Context, req *ReadRequest) (ReadResult, error) {
	return ReadResult{Data: d.data}, nil
}
func (d *sinkDevice) Write(ctx context.Context, req *WriteRequest) (int, error) {
	return req.Len(), nil
}
func (d *sinkDevice) Poll(context.Context, *PollRequest) (uint32, error) {
	return EventIn | EventOut, nil
}
func (d *sinkDevice) Release(context.Context) {}

// benchRequest encodes one request.
func benchRequest(op uint32, unique uint64, body, payload []byte) []byte {
	m := make([]byte, InHeaderSize+len(body)+len(payload))
	binary.LittleEndian.PutUint32(m[0:], uint32(len(m)))
	binary.LittleEndian.PutUint32(m[4:], op)
	binary.LittleEndian.PutUint64(m[8:], unique)
	copy(m[InHeaderSize:], body)
	copy(m[InHeaderSize+len(body):], payload)
	return m
}

func benchRWIn(fh uint64, size int) []byte {
	b := make([]byte, ReadInSize)
	binary.LittleEndian.PutUint64(b[0:], fh)
	binary.LittleEndian.PutUint32(b[16:], uint32(size))
	return b
}

// BenchmarkServerLoop is one 4 KiB WRITE and one 4 KiB READ through the
// server's loop (read the request, decode, call the device, reply): with
// -benchmem it shows what the hot path allocates, which should be nothing.
func BenchmarkServerLoop(b *testing.B) {
	const size = 4096
	ch := newMemChannel()
	s, err := NewServer(ch, &sinkDevice{data: [][]byte{make([]byte, size)}}, Options{Name: "bench0"})
	if err != nil {
		b.Fatal(err)
	}
	s.initDone.Store(true)
	close(s.ready)
	go s.Serve(context.Background())
	defer s.Close()

	roundTrip := func(m []byte) {
		ch.reqs <- m
		if e := <-ch.replies; e != 0 {
			b.Fatalf("reply error %d", -e)
		}
	}
	roundTrip(benchRequest(OpOpen, 2, make([]byte, OpenInSize), nil)) // fh 1
	write := benchRequest(OpWrite, 4, benchRWIn(1, size), make([]byte, size))
	read := benchRequest(OpRead, 6, benchRWIn(1, size), nil)
	binary.LittleEndian.PutUint32(read[InHeaderSize+32:], syscall.O_RDWR)
	for range 100 { // the reader pool settles
		roundTrip(write)
		roundTrip(read)
	}
	b.ReportAllocs()
	b.SetBytes(2 * size)
	b.ResetTimer()
	for b.Loop() {
		roundTrip(write)
		roundTrip(read)
	}
}
