package cuse

import (
	"context"
	"slices"
	"syscall"
)

// Parking: a READ that would wait does not hold a goroutine. The server
// asks the device with O_NONBLOCK added (ReadRequest.Parkable); on EAGAIN
// it keeps the request on its handle and asks again when the handle's
// Waker fires, on the goroutine that called it: the one that delivered
// the data answers the READ, with one writev, and no goroutine is woken
// in between. An INTERRUPT answers a parked READ with EINTR at once.
//
// At most one goroutine retries a handle's parked READs at a time
// (openHandle.retrying); a Waker call meanwhile makes it look once more
// (again), so no change is missed and a Done that wakes from inside a
// retry does not recurse.

// parkedRead is one READ waiting on its handle.
type parkedRead struct {
	unique uint64
	req    ReadRequest
}

// park keeps a READ the device could not answer yet, or answers EINTR if
// an INTERRUPT came meanwhile. A Waker call that raced with the device's
// EAGAIN finds it on the list (the retry looks again).
func (s *Server) park(ctx context.Context, oh *openHandle, unique uint64, req *ReadRequest) {
	s.mu.Lock()
	if ctx.Err() != nil {
		s.mu.Unlock()
		s.stats.Interrupts.Add(1)
		s.reply(unique, syscall.EINTR)
		return
	}
	oh.parked = append(oh.parked, parkedRead{unique: unique, req: *req})
	s.mu.parked[unique] = oh
	retry := !oh.retrying
	if retry {
		oh.retrying = true
	} else {
		oh.again = true
	}
	s.mu.Unlock()
	s.stats.Parked.Add(1)
	if retry {
		// The device may have become ready between its EAGAIN and now,
		// and called its Waker before the READ was on the list.
		s.retryParked(oh)
	}
}

// unparkLocked takes a parked READ off its handle; false if it is not
// parked (answered or interrupted already). s.mu is held.
func (s *Server) unparkLocked(unique uint64) bool {
	oh := s.mu.parked[unique]
	if oh == nil {
		return false
	}
	delete(s.mu.parked, unique)
	for i, p := range oh.parked {
		if p.unique == unique {
			oh.parked = append(oh.parked[:i], oh.parked[i+1:]...)
			break
		}
	}
	return true
}

// retryParked asks the device again for the handle's oldest parked READ
// until it answers EAGAIN with no Waker call since, or none is left. The
// caller set oh.retrying.
func (s *Server) retryParked(oh *openHandle) {
	for {
		s.mu.Lock()
		if len(oh.parked) == 0 || (!oh.again && oh.tried) {
			oh.retrying, oh.again, oh.tried = false, false, false
			s.mu.Unlock()
			return
		}
		p := oh.parked[0]
		oh.again, oh.tried = false, true
		s.mu.Unlock()

		res, err := s.devRead(s.ctx, oh.h, &p.req)
		if err != nil && Errno(err) == syscall.EAGAIN {
			s.devDone(res.Done, false)
			continue // looks again only if a Waker call came meanwhile
		}
		s.mu.Lock()
		mine := s.unparkLocked(p.unique)
		oh.tried = false // the next parked READ has not been asked yet
		s.mu.Unlock()
		if !mine {
			// Interrupted while the device answered: the kernel has its
			// EINTR; the device keeps its bytes.
			s.devDone(res.Done, false)
			continue
		}
		if err == nil && res.Len() > inlineReply && s.addWork() {
			// A large reply is a copy of its own in the kernel: on the
			// waking goroutine (for a stream, the one that takes every
			// frame off the cable) it would hold up what comes next,
			// and the replies of several streams would go out one by
			// one. A goroutine of its own costs one wake-up, small
			// beside the copy.
			go func() {
				defer s.wg.Done()
				s.answerRead(p.unique, p.req.Size, res, nil)
			}()
			continue
		}
		s.answerRead(p.unique, p.req.Size, res, err)
	}
}

// addWork counts a goroutine in wg unless shutdown has begun (it cancels
// under mu before it waits for wg, so no Add can race with the Wait).
func (s *Server) addWork() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.wg.Add(1)
	return true
}

// inlineReply is the largest parked READ's reply written on the waking
// goroutine itself.
const inlineReply = 64 << 10

// answerRead sends a READ's reply: the device's slices by one writev, or
// its error; then Done says whether the kernel took them.
func (s *Server) answerRead(unique uint64, size int, res ReadResult, err error) {
	if err != nil {
		s.devDone(res.Done, false)
		s.reply(unique, s.errno(err, "read"))
		return
	}
	data := clip(res.Data, size)
	if len(data) > MaxReplySlices {
		// More slices than asked for (ReadRequest.MaxSlices): one writev
		// takes at most IOV_MAX buffers, and the kernel would never get
		// a reply that had more. Served by a copy.
		data = [][]byte{slices.Concat(data...)}
	}
	n := total(data) // data is the device's until Done: not read after it
	hb := s.hdrPool.Get().(*[OutHeaderSize]byte)
	putOutHeader(hb[:], OutHeaderSize+n, 0, unique)
	iov := s.iovPool.Get().(*[][]byte)
	*iov = append(append((*iov)[:0], hb[:]), data...)
	err = s.sendv(*iov)
	clear(*iov)
	s.iovPool.Put(iov)
	s.hdrPool.Put(hb)
	s.devDone(res.Done, err == nil)
	if err == nil {
		s.stats.ReadBytes.Add(uint64(n))
	}
}
