package fusefile_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/fusefile"
)

// slicedDevice serves a fixed byte sequence as several slices per READ,
// the way a ring hands out runs of slots, and records what each READ asked
// for. With honour set it returns at most req.MaxSlices slices (a short
// read); without, all of them.
type slicedDevice struct {
	mem    []byte // what is served, in place
	cut    int    // slice length
	honour bool

	// sem is held from a READ until its Done, as a stream's read lock is:
	// the next read(2) may be asked before go-fuse calls Done.
	sem chan struct{}

	mu        sync.Mutex
	off       int
	maxSlices []int
}

func (d *slicedDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	return d, nil
}

func (d *slicedDevice) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	d.sem <- struct{}{}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.maxSlices = append(d.maxSlices, req.MaxSlices)
	var data [][]byte
	for off, n := d.off, 0; off < len(d.mem) && n < req.Size; {
		if d.honour && req.MaxSlices > 0 && len(data) == req.MaxSlices {
			break
		}
		k := min(d.cut, len(d.mem)-off, req.Size-n)
		data = append(data, d.mem[off:off+k])
		off, n = off+k, n+k
	}
	res := cuse.ReadResult{Data: data}
	res.Done = func(delivered bool) {
		if delivered {
			d.mu.Lock()
			d.off += res.Len()
			d.mu.Unlock()
		}
		<-d.sem
	}
	return res, nil
}

func (d *slicedDevice) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	return 0, syscall.EINVAL
}
func (d *slicedDevice) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	return cuse.EventIn, nil
}
func (d *slicedDevice) Release(ctx context.Context) {}

// TestReadRepliesSeveralSlices: the fallback asks for MaxReplySlices
// slices and writes a reply of several slices as one read(2) (by writev
// from the device's memory); a device that keeps to the bound has the
// rest picked up by the next read; one that returns more anyway is still
// served in full and in order (by one copy).
func TestReadRepliesSeveralSlices(t *testing.T) {
	mem := make([]byte, 5*4096+100)
	for i := range mem {
		mem[i] = byte(i * 7 / 4096)
	}
	bound := fusefile.MaxReplySlices * 64
	for _, tc := range []struct {
		cut    int
		honour bool
		reads  []int
	}{
		{cut: 2 * 4096, honour: true, reads: []int{len(mem)}},
		{cut: 64, honour: true, reads: []int{bound, len(mem) - bound}},
		{cut: 64, honour: false, reads: []int{len(mem)}},
	} {
		d := &slicedDevice{mem: mem, cut: tc.cut, honour: tc.honour, sem: make(chan struct{}, 1)}
		dir := mount(t, map[string]fusefile.File{"tbstream0": {Device: d}})
		f, err := os.Open(filepath.Join(dir, "tbstream0"))
		require.NoError(t, err)
		var got []byte
		var reads []int
		buf := make([]byte, 1<<20)
		for len(got) < len(mem) {
			n, err := f.Read(buf)
			require.NoError(t, err)
			require.Positive(t, n)
			reads = append(reads, n)
			got = append(got, buf[:n]...)
		}
		f.Close()
		require.Equal(t, mem, got, "cut %d honour %v: every byte, in order", tc.cut, tc.honour)
		d.mu.Lock()
		asked := d.maxSlices[0]
		d.mu.Unlock()
		require.Equal(t, fusefile.MaxReplySlices, asked, "the fallback asks for MaxReplySlices")
		require.Equal(t, tc.reads, reads, "cut %d honour %v: bytes per read(2)", tc.cut, tc.honour)
	}
}
