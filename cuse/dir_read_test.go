package cuse_test

import (
	"context"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"tbstream/cuse"
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
	// the next read(2) may be asked before the server calls Done.
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

// TestDirReadRepliesSeveralSlices: the server asks for MaxReplySlices
// slices and writes a reply of several slices as one read(2) (by writev
// from the device's memory); a device that keeps to the bound has the
// rest picked up by the next read; one that returns more anyway is still
// served in full and in order, even beyond what one writev takes
// (IOV_MAX, 1024 buffers): by a copy.
func TestDirReadRepliesSeveralSlices(t *testing.T) {
	mem := make([]byte, 5*4096+100)
	for i := range mem {
		mem[i] = byte(i * 7 / 4096)
	}
	bound := cuse.MaxReplySlices * 64
	for _, tc := range []struct {
		name   string
		cut    int
		honour bool
		reads  []int
	}{
		{name: "few large slices", cut: 2 * 4096, honour: true, reads: []int{len(mem)}},
		{name: "bounded", cut: 64, honour: true, reads: []int{bound, len(mem) - bound}},
		{name: "more than asked", cut: 64, honour: false, reads: []int{len(mem)}},
		{name: "more than IOV_MAX", cut: 8, honour: false, reads: []int{len(mem)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &slicedDevice{mem: mem, cut: tc.cut, honour: tc.honour, sem: make(chan struct{}, 1)}
			dir := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: d}})
			fd := openFD(t, filepath.Join(dir.Path(), "tbstream0"), unix.O_RDONLY)
			var got []byte
			var reads []int
			within(t, "reading the file", func() error {
				buf := make([]byte, 1<<20)
				for len(got) < len(mem) {
					n, err := unix.Read(fd, buf)
					if err != nil || n <= 0 {
						return err
					}
					reads = append(reads, n)
					got = append(got, buf[:n]...)
				}
				return nil
			})
			require.Equal(t, mem, got, "every byte, in order")
			d.mu.Lock()
			asked := d.maxSlices[0]
			d.mu.Unlock()
			require.Equal(t, cuse.MaxReplySlices, asked, "the server asks for MaxReplySlices")
			require.Equal(t, tc.reads, reads, "bytes per read(2)")
			require.Zero(t, dir.Stats().Refused.Load(), "no reply refused")
		})
	}
}

// doneDevice answers READs from a script and records every Done call.
type doneDevice struct {
	mu    sync.Mutex
	steps []doneStep // what the next READs return; none: EAGAIN
	dones []doneCall
	reads int
	wakes []cuse.Waker // every handle's
}

type doneStep struct {
	data string
	err  error
}

type doneCall struct {
	step      doneStep
	delivered bool
}

func (d *doneDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.wakes = append(d.wakes, req.Wake)
	return d, nil
}

// push adds a step and wakes the handles (a parked READ asks again).
func (d *doneDevice) push(s doneStep) {
	d.mu.Lock()
	d.steps = append(d.steps, s)
	wakes := d.wakes
	d.mu.Unlock()
	for _, w := range wakes {
		w()
	}
}

func (d *doneDevice) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	step := doneStep{err: syscall.EAGAIN}
	if len(d.steps) > 0 {
		step = d.steps[0]
		d.steps = d.steps[1:]
	}
	res := cuse.ReadResult{Done: func(delivered bool) {
		d.mu.Lock()
		d.dones = append(d.dones, doneCall{step, delivered})
		d.mu.Unlock()
	}}
	if step.err == nil {
		res.Data = [][]byte{[]byte(step.data)}
	}
	return res, step.err
}

func (d *doneDevice) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	return 0, syscall.EINVAL
}
func (d *doneDevice) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) { return 0, nil }
func (d *doneDevice) Release(ctx context.Context)                                     {}

// settled waits until every Read has had its Done and returns the calls.
func (d *doneDevice) settled(t *testing.T) []doneCall {
	t.Helper()
	eventually(t, "a Done per Read", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.dones) == d.reads
	})
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]doneCall(nil), d.dones...)
}

// TestDirReadDone: Done is called exactly once per ReadResult the device
// returned: delivered for a reply the kernel took, not delivered for an
// error (EIO, EAGAIN of a non-blocking read, and each EAGAIN of a parked
// READ before the data came).
func TestDirReadDone(t *testing.T) {
	dev := &doneDevice{}
	d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: dev}})
	path := filepath.Join(d.Path(), "tbstream0")
	fd := openFD(t, path, unix.O_RDONLY)

	dev.push(doneStep{data: "one"})
	require.Equal(t, "one", readSome(t, fd))
	require.Equal(t, []doneCall{{doneStep{data: "one"}, true}}, dev.settled(t))

	dev.push(doneStep{err: syscall.EIO})
	_, err := unix.Read(fd, make([]byte, 8))
	require.ErrorIs(t, err, syscall.EIO)
	require.Equal(t, doneCall{doneStep{err: syscall.EIO}, false}, dev.settled(t)[1])

	nb := openFD(t, path, unix.O_RDONLY|unix.O_NONBLOCK)
	_, err = unix.Read(nb, make([]byte, 8))
	require.ErrorIs(t, err, syscall.EAGAIN)
	require.Equal(t, doneCall{doneStep{err: syscall.EAGAIN}, false}, dev.settled(t)[2])

	// A blocking READ with nothing there: parked, then answered when
	// the data comes.
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 8)
		n, err := unix.Read(fd, b)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b[:n])
	}()
	eventually(t, "the READ parked", func() bool { return d.Stats().Parked.Load() == 1 })
	dev.push(doneStep{data: "two"})
	select {
	case s := <-got:
		require.Equal(t, "two", s)
	case <-time.After(dirGuard):
		t.Fatal("the parked READ was not answered after the Waker call")
	}
	calls := dev.settled(t)
	require.Equal(t, doneCall{doneStep{data: "two"}, true}, calls[len(calls)-1])
	for _, c := range calls[3 : len(calls)-1] {
		require.Equal(t, doneCall{doneStep{err: syscall.EAGAIN}, false}, c, "the tries before the data")
	}
}
