package stream

import (
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
// copies into the TX ring's own buffers, as for the FUSE fallback (go-fuse
// reads WRITEs into its own buffers and never asks).
const (
	// lendings is how many full-size lendings (cuse.DefaultMaxIO, 32
	// buffers) the pool holds: about one per request reader that waits
	// (two idle readers, one in a blocked READ) plus frames in flight.
	lendings = 8
	// lendBuffers is the lend pool's size: 1 MiB of DMA memory per
	// stream that has been opened through CUSE.
	lendBuffers = lendings * cuse.DefaultMaxIO / nhi.SlotSize
)

// lending is one WriteBuffer answer: the buffers reserved, and the runs
// handed to the server (b.Runs at lending time).
type lending struct {
	b    nhi.TxBuffers
	runs [][]byte
}

var _ cuse.WriteBufferer = (*Stream)(nil)

// WriteBuffer lends TX buffers for the next request a CUSE reader reads,
// or nil (the server then uses its own): while no ring pair is open, when
// size exceeds the pool, when the pool is short of free buffers, after
// the stream finished, or when the pool cannot be allocated (logged once).
// It does not block.
func (st *Stream) WriteBuffer(size int) ([][]byte, func(int)) {
	frames := (size + nhi.SlotSize - 1) / nhi.SlotSize
	if size < 1 || frames > lendBuffers {
		return nil, nil
	}
	st.mu.Lock()
	open := st.data != nil
	st.mu.Unlock()
	if !open {
		return nil, nil
	}
	st.lendMu.Lock()
	defer st.lendMu.Unlock()
	if st.lendEnded {
		return nil, nil
	}
	if st.lend == nil {
		pool, err := st.g.s.cfg.Data.NHI.AllocTxPool(lendBuffers)
		if err != nil {
			st.lendEnded = true
			st.g.s.log.Warn("no DMA memory to lend for CUSE writes; they are copied", "stream", st.path(), "err", err)
			return nil, nil
		}
		st.lend = pool
		st.lent = make(map[*byte]*lending)
	}
	l := &lending{}
	if st.lend.Reserve(&l.b, frames) < frames {
		l.b.Release()
		return nil, nil
	}
	l.runs = append([][]byte(nil), l.b.Runs()...)
	st.lent[&l.runs[0][0]] = l
	return l.runs, func(int) { st.giveBack(l) }
}

// giveBack ends a lending: the buffers Write posted belong to their
// descriptors (they return to the pool at completion), the rest go back
// now.
func (st *Stream) giveBack(l *lending) {
	st.lendMu.Lock()
	delete(st.lent, &l.runs[0][0])
	st.lendMu.Unlock()
	l.b.Release()
}

// lendingOf returns the lending a WRITE payload was read into, or nil
// when it is not one of ours (the server's own buffer, the FUSE
// fallback). The payload must be a prefix of the lent runs: the server
// cuts its n bytes from the front of them (full runs, then a tail).
func (st *Stream) lendingOf(data [][]byte) *lending {
	if len(data) == 0 || len(data[0]) == 0 {
		return nil
	}
	st.lendMu.Lock()
	l := st.lent[&data[0][0]]
	st.lendMu.Unlock()
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

// closeLend ends lending once the device's server has stopped; the pool's
// memory is freed when its last posted buffer is back.
func (st *Stream) closeLend() {
	st.lendMu.Lock()
	pool := st.lend
	st.lend, st.lendEnded = nil, true
	st.lendMu.Unlock()
	if pool != nil {
		pool.Close()
	}
}
