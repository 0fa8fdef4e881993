package stream

import (
	"log/slog"
	"sync"

	"tbstream/cuse"
	"tbstream/nhi"
)

// Lending WRITE buffers (cuse.WriteBufferer): the CUSE server reads each
// request with readv([head, lent buffers]), so a WRITE payload lands in
// TX buffers, and Write posts those very buffers (no copy in user space).
//
// The buffers come from the stream's lend pool (Stream.lend), not from a
// ring: a reader holds its lending until a WRITE arrives, which may be
// never, and several readers hold lendings at once, in any order, while
// ring pairs start and stop under them. So the pool lives with the
// stream: allocated from the NHI's DMA memory at the first lending while
// a ring pair is open, closed in finish once the device's server has
// stopped (every lending is back then), its memory freed when the last
// posted buffer completes or its ring stops. Every ring pair of the
// stream is on the same NHI, so a lending is good for whichever pair the
// WRITE's handle uses: there are no generations, and no WRITE is copied
// because its buffers are older than its rings.
//
// When the pool cannot lend (every buffer posted or lent) WriteBuffer
// returns nil and the server reads into its own buffer; Write then
// copies into the TX ring's own buffers.
//
// The FUSE fallback has one server for every stream's file, whose readers
// lend before they know which file the next request is for: they borrow
// from the service's pool (Service.WriteBuffer), which any stream's Write
// can post from, as every ring pair of the host is on the same NHI.
const (
	// lendings is how many full-size lendings (cuse.DefaultMaxIO, 32
	// buffers) the pool holds: about one per request reader that waits
	// (two idle readers, one in a blocked READ) plus frames in flight.
	lendings = 8
	// lendBuffers is the lend pool's size: 1 MiB of DMA memory per
	// stream that has been opened through CUSE.
	lendBuffers = lendings * cuse.DefaultMaxIO / nhi.SlotSize
	// mountLendBuffers is the service's pool, for the FUSE fallback's
	// requests of up to 1 MiB (cuse.MaxFuseIO): two idle readers' and
	// two WRITEs' worth, 4 MiB of DMA memory for the host.
	mountLendBuffers = 4 * cuse.MaxFuseIO / nhi.SlotSize
)

// lending is one WriteBuffer answer: the buffers reserved, and the runs
// handed to the server (b.Runs at lending time).
type lending struct {
	b    nhi.TxBuffers
	runs [][]byte
	done func(int) // giveBack of this lending, made once
}

// lender is a pool of TX buffers lent to a device server and the
// lendings out of it: a stream's, for its CUSE server, and the service's,
// for the FUSE fallback's one server of every stream (whose readers lend
// before they know which file the next request is for).
type lender struct {
	size int    // pool buffers
	what string // for the log line when there is no memory
	// mu guards the rest (a leaf lock, taken alone).
	mu    sync.Mutex
	pool  *nhi.TxPool        // nil until the first lending
	lent  map[*byte]*lending // by the first byte lent
	ended bool               // closed, or no DMA memory: lend no more
	spare sync.Pool          // *lending given back, reused (lending is per request)
}

// lend reserves buffers for size bytes from the pool, which it allocates
// from n at the first call, or returns nil.
func (ln *lender) lend(n *nhi.NHI, log *slog.Logger, size int) ([][]byte, func(int)) {
	frames := (size + nhi.SlotSize - 1) / nhi.SlotSize
	if size < 1 || frames > ln.size {
		return nil, nil
	}
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.ended {
		return nil, nil
	}
	if ln.pool == nil {
		pool, err := n.AllocTxPool(ln.size)
		if err != nil {
			ln.ended = true
			log.Warn("no DMA memory to lend for writes; they are copied", "for", ln.what, "err", err)
			return nil, nil
		}
		ln.pool = pool
		ln.lent = make(map[*byte]*lending)
	}
	l, _ := ln.spare.Get().(*lending)
	if l == nil {
		l = &lending{}
		l.done = func(int) { ln.giveBack(l) }
	}
	if ln.pool.Reserve(&l.b, frames) < frames {
		l.b.Release()
		ln.spare.Put(l)
		return nil, nil
	}
	l.runs = append(l.runs[:0], l.b.Runs()...)
	ln.lent[&l.runs[0][0]] = l
	return l.runs, l.done
}

// giveBack ends a lending: the buffers Write posted belong to their
// descriptors (they return to the pool at completion), the rest go back
// now.
func (ln *lender) giveBack(l *lending) {
	ln.mu.Lock()
	delete(ln.lent, &l.runs[0][0])
	ln.mu.Unlock()
	l.b.Release()
	clear(l.runs)
	l.runs = l.runs[:0]
	ln.spare.Put(l) // its slices' capacity serves the next lending
}

// lendingOf returns the lending a WRITE payload was read into, or nil
// when it is not one of this lender's (the server's own buffer). The
// payload must be a prefix of the lent runs: the server cuts its n bytes
// from the front of them (full runs, then a tail).
func (ln *lender) lendingOf(data [][]byte) *lending {
	if len(data) == 0 || len(data[0]) == 0 {
		return nil
	}
	ln.mu.Lock()
	l := ln.lent[&data[0][0]]
	ln.mu.Unlock()
	if l == nil || len(data) > len(l.runs) {
		return nil
	}
	for i, p := range data {
		r := l.runs[i]
		if len(p) == 0 || &p[0] != &r[0] || len(p) > len(r) || (i < len(data)-1 && len(p) != len(r)) {
			return nil
		}
	}
	return l
}

// close ends lending once the server that borrows has stopped; the
// pool's memory is freed when its last posted buffer is back.
func (ln *lender) close() {
	ln.mu.Lock()
	pool := ln.pool
	ln.pool, ln.ended = nil, true
	ln.mu.Unlock()
	if pool != nil {
		pool.Close()
	}
}

var (
	_ cuse.WriteBufferer = (*Stream)(nil)
	_ cuse.WriteBufferer = (*Service)(nil)
)

// WriteBuffer lends TX buffers for the next request a CUSE reader reads,
// or nil (the server then uses its own): while no ring pair is open, when
// size exceeds the pool, when the pool is short of free buffers, after
// the stream finished, or when the pool cannot be allocated (logged once).
// It does not block.
func (st *Stream) WriteBuffer(size int) ([][]byte, func(int)) {
	st.mu.Lock()
	open := st.data != nil
	st.mu.Unlock()
	if !open {
		return nil, nil
	}
	return st.lend.lend(st.g.s.cfg.Data.NHI, st.g.s.log, size)
}

// WriteBuffer lends TX buffers for the next request a reader of the FUSE
// fallback's mount reads, for whichever stream it turns out to be
// (every stream's rings are on the service's NHI), or nil. The daemon
// hands the service to the mount once both exist (cuse.Dir.SetBuffers).
func (s *Service) WriteBuffer(size int) ([][]byte, func(int)) {
	return s.lend.lend(s.cfg.Data.NHI, s.log, size)
}

// CloseLending ends the service's lending once the mount it lends to has
// stopped.
func (s *Service) CloseLending() { s.lend.close() }

// lendingOf returns the lending a WRITE payload of st was read into: the
// stream's own (CUSE) or the service's (the FUSE fallback), or nil.
func (st *Stream) lendingOf(data [][]byte) *lending {
	if l := st.lend.lendingOf(data); l != nil {
		return l
	}
	return st.g.s.lend.lendingOf(data)
}
