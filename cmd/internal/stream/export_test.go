package stream

import "tbstream/nhi"

// LendPool returns the stream's lend pool, nil before the first lending
// and after the stream finished.
func LendPool(st *Stream) *nhi.TxPool {
	st.lend.mu.Lock()
	defer st.lend.mu.Unlock()
	return st.lend.pool
}

// Lendings is the number of lendings the CUSE server holds.
func Lendings(st *Stream) int {
	st.lend.mu.Lock()
	defer st.lend.mu.Unlock()
	return len(st.lend.lent)
}

// LendBuffers is the lend pool's size.
const LendBuffers = lendBuffers
