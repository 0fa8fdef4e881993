package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
)

// fakeEDU models the edu device (hw/misc/edu.c) behind an IOMMU, with
// knobs that break it, to show that each check fails when the device
// misbehaves. DMA runs at once when the command is written.
type fakeEDU struct {
	mu        sync.Mutex
	id        uint32
	addr4     uint32
	status    uint32
	src, dst  uint32
	cnt, cmd  uint32
	buf       [eduDMASize]byte
	maps      map[uint64][]byte
	next      uint64
	faults    []uint64
	vec       chan struct{}
	hwErrors  int    // transfers qemu 7.2 would stop the machine for
	broken    string // "", "liveness", "corrupt", "no-irq", "no-iommu", "no-status", "spurious", "stuck"
	allocated int
}

func newFake(broken string) *fakeEDU {
	return &fakeEDU{id: eduID, maps: map[uint64][]byte{}, next: iovaBase, vec: make(chan struct{}, 1), broken: broken}
}

func (f *fakeEDU) Read32(off nhi.Reg) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch off {
	case eduRegID:
		return f.id
	case eduRegLiveness:
		return f.addr4
	case eduRegIRQStatus:
		if f.broken == "no-status" {
			return 0
		}
		return f.status
	case eduRegDMACmd:
		return f.cmd
	}
	return 0xffffffff
}

func (f *fakeEDU) raise(v uint32) {
	f.status |= v
	if f.broken == "no-irq" {
		return
	}
	select {
	case f.vec <- struct{}{}:
	default:
	}
}

// ram finds the mapping holding [iova, iova+n).
func (f *fakeEDU) ram(iova uint64, n int) []byte {
	for base, m := range f.maps {
		if iova >= base && iova+uint64(n) <= base+uint64(len(m)) {
			return m[iova-base : iova-base+uint64(n)]
		}
	}
	return nil
}

func (f *fakeEDU) Write32(off nhi.Reg, v uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch off {
	case eduRegLiveness:
		f.addr4 = ^v
		if f.broken == "liveness" {
			f.addr4 = v
		}
	case eduRegIRQRaise:
		f.raise(v)
	case eduRegIRQAck:
		f.status &^= v
	case eduRegDMASrc:
		f.src = v
	case eduRegDMADst:
		f.dst = v
	case eduRegDMACount:
		f.cnt = v
	case eduRegDMACmd:
		if v&eduDMARun == 0 {
			return
		}
		f.cmd = v
		if f.broken == "stuck" {
			return
		}
		side := f.dst // the device buffer's end of the transfer
		if v&eduDMAToPCI != 0 {
			side = f.src
		}
		if side < eduDMAStart || side+f.cnt >= eduDMAStart+eduDMASize {
			f.hwErrors++ // qemu 7.2's off-by-one check: ending at the buffer's end aborts
			return
		}
		if v&eduDMAToPCI == 0 {
			if m := f.ram(uint64(f.src), int(f.cnt)); m != nil {
				copy(f.buf[f.dst-eduDMAStart:], m)
			}
		} else {
			m := f.ram(uint64(f.dst), int(f.cnt))
			switch {
			case m != nil:
				copy(m, f.buf[f.src-eduDMAStart:][:f.cnt])
				switch f.broken {
				case "corrupt":
					m[f.cnt/2] ^= 0x40
				case "overrun":
					m = f.ram(uint64(f.dst), int(f.cnt)+1)
					m[f.cnt] = 1
				}
			case f.broken != "no-iommu":
				f.faults = append(f.faults, uint64(f.dst))
			}
		}
		f.cmd &^= eduDMARun
		if v&eduDMAIRQ != 0 {
			f.raise(eduIRQDMA)
		}
	}
}

type fakeMemory struct {
	f    *fakeEDU
	b    []byte
	iova uint64
}

func (m *fakeMemory) Bytes() []byte { return m.b }
func (m *fakeMemory) IOVA() uint64  { return m.iova }
func (m *fakeMemory) Free() error {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	delete(m.f.maps, m.iova)
	return nil
}

func (f *fakeEDU) AllocDMA(size int) (nhi.Memory, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	size = (size + nhi.PageSize - 1) &^ (nhi.PageSize - 1)
	m := &fakeMemory{f: f, b: make([]byte, size), iova: f.next}
	f.maps[m.iova] = m.b
	f.next += uint64(size) + nhi.PageSize
	f.allocated++
	return m, nil
}

func (f *fakeEDU) Vectors() []<-chan struct{} { return []<-chan struct{}{f.vec} }
func (f *fakeEDU) Close() error               { return nil }

func (f *fakeEDU) faulted(ctx context.Context, iova uint64) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.faults {
		if a == iova {
			return fmt.Sprintf("fault addr %#x", a), nil
		}
	}
	return "", fmt.Errorf("no fault at %#x", iova)
}

// runChecks runs the checks in order on f and returns each one's error.
func runChecks(t *testing.T, f *fakeEDU) map[string]error {
	// A short wait: nothing in the model is asynchronous.
	e := &edu{dev: f, wait: 50 * time.Millisecond, faulted: f.faulted}
	if f.broken == "spurious" {
		f.vec <- struct{}{}
	}
	out := map[string]error{}
	for _, c := range e.checks() {
		detail, err := c.run(context.Background())
		t.Logf("%s: %q %v", c.name, detail, err)
		out[c.name] = err
	}
	return out
}

func TestChecksPassOnAWorkingDevice(t *testing.T) {
	f := newFake("")
	for name, err := range runChecks(t, f) {
		require.NoError(t, err, name)
	}
	require.Equal(t, 2, f.allocated)
	require.Len(t, f.faults, 1, "one write to the unmapped IOVA")
	require.Zero(t, f.hwErrors)
}

// TestChecksFail breaks the model one way at a time: the checks that
// depend on what broke fail, with the reason.
func TestChecksFail(t *testing.T) {
	for _, tc := range []struct {
		broken string
		setup  func(*fakeEDU)
		fail   map[string]string // check -> part of its error
	}{
		{"bad-id", func(f *fakeEDU) { f.id = 0x020000ed }, map[string]string{"vfio-edu-id": "want 0x010000ed"}},
		{"liveness", nil, map[string]string{"vfio-edu-liveness": "read 0x12345678"}},
		{"no-irq", nil, map[string]string{
			"vfio-edu-msi":             "no interrupt",
			"vfio-edu-dma-to-device":   "no interrupt",
			"vfio-edu-dma-from-device": "no interrupt",
			"vfio-edu-iommu-fault":     "no interrupt",
		}},
		{"no-status", nil, map[string]string{
			"vfio-edu-msi":             "with status 0x0",
			"vfio-edu-dma-to-device":   "with status 0x0",
			"vfio-edu-dma-from-device": "with status 0x0",
			"vfio-edu-iommu-fault":     "with status 0x0",
		}},
		{"stuck", nil, map[string]string{
			"vfio-edu-dma-to-device":   "no interrupt",
			"vfio-edu-dma-from-device": "no interrupt",
			"vfio-edu-iommu-fault":     "no interrupt",
		}},
		{"corrupt", nil, map[string]string{"vfio-edu-dma-from-device": "first at offset 2016"}},
		{"overrun", nil, map[string]string{"vfio-edu-dma-from-device": "wrote past"}},
		{"no-iommu", nil, map[string]string{"vfio-edu-iommu-fault": "no fault"}},
		{"spurious", nil, map[string]string{"vfio-edu-msi": "pending before the check"}},
	} {
		t.Run(tc.broken, func(t *testing.T) {
			f := newFake(tc.broken)
			if tc.setup != nil {
				tc.setup(f)
			}
			for name, err := range runChecks(t, f) {
				want, ok := tc.fail[name]
				if !ok {
					require.NoError(t, err, name)
					continue
				}
				require.ErrorContains(t, err, want, name)
			}
		})
	}
}

// TestCheckNames: vm.sh counts the names listed in test/vm/vfio.sh; they
// must be the ones this command prints, in order.
func TestCheckNames(t *testing.T) {
	b, err := os.ReadFile("../../vfio.sh")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?s)\nedu_checks="([^"]*)"`).FindSubmatch(b)
	require.NotNil(t, m, "edu_checks in test/vm/vfio.sh")
	want := []string{"vfio-edu-bind", "vfio-edu-nhi-defaults", "vfio-edu-open"}
	for _, c := range (&edu{}).checks() {
		want = append(want, c.name)
	}
	want = append(want, "vfio-edu-close")
	require.Equal(t, want, strings.Fields(string(m[1])))
}

// TestRunWithoutTheDevice: with no such PCI device every check is reported
// bad, in the order vfio.sh lists them, and run says so.
func TestRunWithoutTheDevice(t *testing.T) {
	var out strings.Builder
	require.False(t, run(&out, "0000:7f:1f.7"))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"vfio-edu-nhi-defaults", "vfio-edu-open"}
	for _, c := range (&edu{}).checks() {
		want = append(want, c.name)
	}
	want = append(want, "vfio-edu-close")
	require.Len(t, lines, len(want), out.String())
	for i, line := range lines {
		require.True(t, strings.HasPrefix(line, "bad "+want[i]+": "), line)
	}
	require.Contains(t, lines[1], "0000:7f:1f.7")
}
