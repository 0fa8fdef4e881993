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

// TestReadRepliesOneSlice: the fallback asks for one slice, and a device
// that keeps to it gets its slice written out as is (go-fuse takes the
// device's memory, the reply is short) and the next read picks up the
// rest; a device that returns several anyway is still served in full and
// in order (by a copy).
func TestReadRepliesOneSlice(t *testing.T) {
	mem := make([]byte, 5*4096+100)
	for i := range mem {
		mem[i] = byte(i * 7 / 4096)
	}
	for _, honour := range []bool{true, false} {
		d := &slicedDevice{mem: mem, cut: 2 * 4096, honour: honour, sem: make(chan struct{}, 1)}
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
		require.Equal(t, mem, got, "honour %v: every byte, in order", honour)
		d.mu.Lock()
		asked := d.maxSlices[0]
		d.mu.Unlock()
		require.Equal(t, 1, asked, "the fallback asks for one slice")
		if honour {
			require.Equal(t, []int{2 * 4096, 2 * 4096, 4096 + 100}, reads, "one slice per read(2)")
		} else {
			require.Equal(t, []int{len(mem)}, reads, "several slices gathered into one reply")
		}
	}
}
