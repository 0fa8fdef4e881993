package stream

import (
	"context"
	"syscall"

	"tbstream/cuse"
)

// Poll reports readiness with Linux's masks: ERR alone in busy-poll mode
// (nothing could wake a poller), HUP|ERR without a valid stream or on rings
// set up for a peer that went away, OUT with a free TX slot, IN with a
// completed RX frame (the CLOSE frame included).
func (h *handle) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	st, d := h.st, h.d
	st.mu.Lock()
	busy, err := d.p.busyPoll, st.validLocked()
	if err == nil && d.stale {
		err = syscall.ENXIO
	}
	st.mu.Unlock()
	if busy {
		return cuse.EventErr, nil
	}
	if err != nil {
		return cuse.EventHup | cuse.EventErr, nil
	}
	var mask uint32
	if d.tx.TxFree() > 0 {
		mask |= cuse.EventOut | cuse.EventWrNorm
	}
	if d.rx.RxReady() > 0 {
		mask |= cuse.EventIn | cuse.EventRdNorm
	}
	return mask, nil
}
