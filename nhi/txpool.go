package nhi

import (
	"fmt"
	"sync"
)

// TxPool is a set of 4 KiB TX buffers in one DMA allocation. A TX ring
// posts buffers of any pool of its NHI, in any order: each descriptor
// remembers the buffer it carries and gives it back to its pool when the
// completion is reaped or the ring stops. Every TX ring has a pool of its
// own (Size buffers, which Ring.TxReserve takes from); a user that lends
// buffers for longer (a CUSE server reading WRITE payloads straight into
// them) allocates another with AllocTxPool and reserves from it directly.
//
// Free buffers are handed out oldest first (a FIFO), so buffers that come
// back in order go out again as contiguous runs. Safe for concurrent use;
// mu is a leaf lock, taken under Ring.mu when a ring gives buffers back.
type TxPool struct {
	mem  Memory
	buf  []byte
	iova uint64
	size int

	mu     sync.Mutex
	free   []int32 // FIFO of free buffer indices: head, count
	head   int
	count  int
	closed bool // no more reservations; the memory goes with the last buffer
	freed  bool
}

// TxPoolStats are a pool's accounting.
type TxPoolStats struct {
	Size int // buffers
	Free int // in the pool; the others are reserved or posted
}

// AllocTxPool allocates a pool of that many 4 KiB TX buffers from the
// NHI's DMA memory.
func (n *NHI) AllocTxPool(buffers int) (*TxPool, error) {
	if buffers < 1 || buffers > 1<<20 {
		return nil, fmt.Errorf("alloc tx pool of %d buffers: %w", buffers, ErrInvalid)
	}
	mem, err := n.dev.AllocDMA(buffers * SlotSize)
	if err != nil {
		return nil, fmt.Errorf("alloc tx pool of %d buffers: %w", buffers, err)
	}
	return newTxPool(mem, buffers), nil
}

func newTxPool(mem Memory, buffers int) *TxPool {
	p := &TxPool{mem: mem, buf: mem.Bytes(), iova: mem.IOVA(), size: buffers,
		free: make([]int32, buffers), count: buffers}
	for i := range p.free {
		p.free[i] = int32(i)
	}
	return p
}

// Size returns the number of buffers.
func (p *TxPool) Size() int { return p.size }

// Stats returns the pool's accounting.
func (p *TxPool) Stats() TxPoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return TxPoolStats{Size: p.size, Free: p.count}
}

// Memory returns the pool's DMA memory, for tests that check where data
// landed.
func (p *TxPool) Memory() []byte { return p.buf }

func (p *TxPool) buffer(i int32) []byte {
	off := int(i) * SlotSize
	return p.buf[off : off+SlotSize : off+SlotSize]
}

// Reserve appends up to n free buffers to b, oldest first, and returns how
// many it took: 0 when none is free, the pool is closed, or b holds
// buffers of another pool (a TxBuffers holds one pool's).
func (p *TxPool) Reserve(b *TxBuffers, n int) int {
	if b.pool != nil && b.pool != p && len(b.idx) > 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	n = min(n, p.count)
	for range n {
		b.idx = append(b.idx, p.free[p.head])
		p.head = (p.head + 1) % p.size
	}
	p.count -= n
	if n > 0 {
		b.pool = p
		b.dirty = true
	}
	return n
}

// put gives buffers back; the memory is freed with the last one of a
// closed pool.
func (p *TxPool) put(idx []int32) {
	if len(idx) == 0 {
		return
	}
	p.mu.Lock()
	if p.count+len(idx) > p.size {
		p.mu.Unlock()
		panic("nhi: tx pool buffer given back twice")
	}
	for _, i := range idx {
		p.free[(p.head+p.count)%p.size] = i
		p.count++
	}
	free := p.closedAndFullLocked()
	p.mu.Unlock()
	if free {
		p.mem.Free()
	}
}

func (p *TxPool) closedAndFullLocked() bool {
	if p.closed && !p.freed && p.count == p.size {
		p.freed = true
		return true
	}
	return false
}

// Close ends the pool: no buffer is reserved after it, and its DMA
// memory is freed as soon as every buffer is back (at once if none is
// out). Buffers reserved or posted meanwhile stay valid until then.
func (p *TxPool) Close() {
	p.mu.Lock()
	p.closed = true
	free := p.closedAndFullLocked()
	p.mu.Unlock()
	if free {
		p.mem.Free()
	}
}

// TxBuffers are buffers reserved from one TxPool and not yet posted: the
// caller fills them front to back (Runs) and posts a prefix of them with
// Ring.TxCommit, which takes the posted ones out; Release gives the rest
// back. The zero value is empty; it is reused across batches and is not
// safe for concurrent use.
type TxBuffers struct {
	pool  *TxPool
	idx   []int32 // reserved buffers, in fill order
	runs  [][]byte
	dirty bool // runs is stale
}

// Len returns the number of buffers held.
func (b *TxBuffers) Len() int { return len(b.idx) }

// Runs returns the memory of the buffers held, in fill order, adjacent
// buffers merged into one slice. It is valid until the next Reserve,
// TxCommit or Release on b.
func (b *TxBuffers) Runs() [][]byte {
	if !b.dirty {
		return b.runs
	}
	b.dirty = false
	b.runs = b.runs[:0]
	for i := 0; i < len(b.idx); {
		j := i + 1
		for j < len(b.idx) && b.idx[j] == b.idx[j-1]+1 {
			j++
		}
		start, end := int(b.idx[i])*SlotSize, int(b.idx[j-1]+1)*SlotSize
		b.runs = append(b.runs, b.pool.buf[start:end:end])
		i = j
	}
	return b.runs
}

// Release gives every buffer held back to its pool.
func (b *TxBuffers) Release() {
	if len(b.idx) > 0 {
		b.pool.put(b.idx)
	}
	b.idx = b.idx[:0]
	b.runs = b.runs[:0]
	b.dirty = false
}

// drop removes the first n buffers (posted by TxCommit).
func (b *TxBuffers) drop(n int) {
	b.idx = append(b.idx[:0], b.idx[n:]...)
	b.dirty = true
}
