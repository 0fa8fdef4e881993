package stream

import (
	"context"
	"syscall"

	"tbstream/cuse"
)

// Poll reports readiness with Linux's masks: ERR alone in busy-poll mode
// (nothing could wake a poller), HUP|ERR without a valid stream or on rings
// set up for a peer that went away, OUT with a free TX slot, IN with a
// completed RX frame (the CLOSE frame included). Where Linux has no rule:
// once the peer's session ended, OUT (a write does not block, it fails
// with ENXIO), as the emptied TX ring would say anyway; while the session
// awaits the end of the peer's last one, neither IN nor OUT (reads and
// writes wait); what was carried over from the last session is IN, and
// so is end of file (the peer's CLOSE read, or the stream removed), which
// a read returns without waiting.
func (h *handle) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	st, d := h.st, h.d
	h.touch()
	st.mu.Lock()
	busy, err := d.p.busyPoll, st.validLocked()
	if err == nil && d.stale {
		err = syscall.ENXIO
	}
	peerClosed, awaiting := d.peerClosed, d.awaiting
	eof := st.closed || st.removed // a read returns 0 at once
	st.mu.Unlock()
	if busy {
		return cuse.EventErr, nil
	}
	if err != nil {
		return cuse.EventHup | cuse.EventErr, nil
	}
	if awaiting {
		return 0, nil
	}
	var mask uint32
	if peerClosed || d.tx.TxFree() > 0 {
		mask |= cuse.EventOut | cuse.EventWrNorm
	} else {
		st.outWanted.Store(true)
		if d.tx.TxFree() > 0 { // a completion between the look and the flag
			mask |= cuse.EventOut | cuse.EventWrNorm
		}
	}
	if eof || d.rx.RxReady() > 0 || h.carried() {
		mask |= cuse.EventIn | cuse.EventRdNorm
	}
	return mask, nil
}

// carried reports whether the last session left something for this one
// that is not read yet. It looks without readSem: a reader may be taking
// it, and then a poll right after sees the ring.
func (h *handle) carried() bool {
	select {
	case h.d.readSem <- struct{}{}:
		c := len(h.d.carry) > 0 || h.d.carryClose
		<-h.d.readSem
		return c
	default:
		return false
	}
}
