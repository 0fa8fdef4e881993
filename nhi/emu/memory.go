package emu

import (
	"fmt"
	"sync"
	"sync/atomic"

	"tbstream/nhi"
)

// iovaBase is where the emulated IOMMU starts handing out addresses; zero
// and low addresses stay unmapped so a zeroed descriptor faults.
const iovaBase = 1 << 32

// region is one DMA allocation.
type region struct {
	iova uint64
	mem  []byte
}

// memoryMap is the emulated IOMMU: IOVA ranges to host memory. Lookups
// are lock-free over an immutable sorted snapshot; allocation and free
// (rare) copy it under mu.
type memoryMap struct {
	mu      sync.Mutex
	next    uint64
	regions atomic.Pointer[[]region]
}

func newMemoryMap() *memoryMap {
	m := &memoryMap{next: iovaBase}
	m.regions.Store(&[]region{})
	return m
}

// dmaMemory implements nhi.Memory.
type dmaMemory struct {
	m    *memoryMap
	iova uint64
	mem  []byte
	once sync.Once
}

func (d *dmaMemory) Bytes() []byte { return d.mem }
func (d *dmaMemory) IOVA() uint64  { return d.iova }
func (d *dmaMemory) Free() error {
	d.once.Do(func() { d.m.remove(d.iova) })
	return nil
}

func (m *memoryMap) alloc(size int) (*dmaMemory, error) {
	if size <= 0 || size > 1<<30 {
		return nil, fmt.Errorf("alloc dma: size %d out of range", size)
	}
	size = (size + nhi.PageSize - 1) &^ (nhi.PageSize - 1)
	raw := make([]byte, size+nhi.PageSize)
	off := int(nhi.PageSize-uintptrOf(raw)%nhi.PageSize) % nhi.PageSize
	mem := raw[off : off+size : off+size]

	m.mu.Lock()
	defer m.mu.Unlock()
	iova := m.next
	m.next += uint64(size) + nhi.PageSize // a guard page between buffers
	old := *m.regions.Load()
	regions := append(append(make([]region, 0, len(old)+1), old...), region{iova: iova, mem: mem})
	m.regions.Store(&regions)
	return &dmaMemory{m: m, iova: iova, mem: mem}, nil
}

func (m *memoryMap) remove(iova uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.regions.Load()
	regions := make([]region, 0, len(old))
	for _, r := range old {
		if r.iova != iova {
			regions = append(regions, r)
		}
	}
	m.regions.Store(&regions)
}

// translate returns the n bytes at iova, or nil when any of them is
// unmapped (a DMA fault).
func (m *memoryMap) translate(iova uint64, n int) []byte {
	regions := *m.regions.Load()
	lo, hi := 0, len(regions) // first region ending above iova
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if regions[mid].iova+uint64(len(regions[mid].mem)) <= iova {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	i := lo
	if i == len(regions) || regions[i].iova > iova {
		return nil
	}
	off := iova - regions[i].iova
	if off+uint64(n) > uint64(len(regions[i].mem)) {
		return nil
	}
	return regions[i].mem[off : off+uint64(n) : off+uint64(n)]
}
