package stream

import "tbstream/nhi"

// LendPool returns the stream's lend pool, nil before the first lending
// and after the stream finished.
func LendPool(st *Stream) *nhi.TxPool {
	st.lendMu.Lock()
	defer st.lendMu.Unlock()
	return st.lend
}

// Lendings is the number of lendings the CUSE server holds.
func Lendings(st *Stream) int {
	st.lendMu.Lock()
	defer st.lendMu.Unlock()
	return len(st.lent)
}

// LendBuffers is the lend pool's size.
const LendBuffers = lendBuffers
