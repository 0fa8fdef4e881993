package loopback

import (
	"context"
	"sync"
	"syscall"

	"tbstream/cuse"
)

// DefaultSize is the capacity New uses for 0.
const DefaultSize = 1 << 20

// Pipe is the device. The zero value is not usable; call New.
type Pipe struct {
	readTurn  chan struct{} // held from Read until its Done: one reader at a time
	writeTurn chan struct{} // held for a whole WRITE, so requests do not interleave

	mu struct {
		sync.Mutex
		ring    []byte
		r, n    int           // read position, bytes stored
		lent    int           // of n, bytes in a READ reply not yet Done
		writers int           // open handles that may write
		hangups int           // times the last writer left
		changed chan struct{} // closed and replaced on every change
		wakers  map[*handle]cuse.Waker
	}
}

// New returns an empty pipe holding up to size bytes.
func New(size int) *Pipe {
	if size <= 0 {
		size = DefaultSize
	}
	p := &Pipe{readTurn: make(chan struct{}, 1), writeTurn: make(chan struct{}, 1)}
	p.mu.ring = make([]byte, size)
	p.mu.changed = make(chan struct{})
	p.mu.wakers = map[*handle]cuse.Waker{}
	return p
}

var _ cuse.Device = (*Pipe)(nil)

// changedLocked wakes blocked requests and returns the poll waiters' and
// parked reads' Wakers, to be called once mu is unlocked (and a turn the
// caller holds is given back): a Waker may call Read.
func (p *Pipe) changedLocked() []cuse.Waker {
	close(p.mu.changed)
	p.mu.changed = make(chan struct{})
	ws := make([]cuse.Waker, 0, len(p.mu.wakers))
	for _, w := range p.mu.wakers {
		ws = append(ws, w)
	}
	return ws
}

func wakeAll(ws []cuse.Waker) {
	for _, w := range ws {
		w()
	}
}

// Open admits a reader, a writer or both.
func (p *Pipe) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	h := &handle{p: p, writer: req.Writable()}
	p.mu.Lock()
	defer p.mu.Unlock()
	h.seen = p.mu.hangups
	if h.writer {
		p.mu.writers++
	}
	if req.Wake != nil {
		p.mu.wakers[h] = req.Wake
	}
	return h, nil
}

// Buffered reports the number of bytes in the pipe.
func (p *Pipe) Buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.n
}

type handle struct {
	p      *Pipe
	writer bool
	seen   int // Pipe.mu.hangups when opened
}

// eofLocked reports whether the pipe is at end of file for h.
func (h *handle) eofLocked() bool {
	p := h.p
	return p.mu.n == 0 && p.mu.writers == 0 && p.mu.hangups > h.seen
}

// take acquires a turn, or fails when ctx ends first. Non-blocking requests
// wait for the turn too: its holder never waits for anything but the pipe.
func take(ctx context.Context, turn chan struct{}) error {
	select {
	case turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *handle) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	p := h.p
	if err := take(ctx, p.readTurn); err != nil {
		return cuse.ReadResult{}, err
	}
	for {
		p.mu.Lock()
		if p.mu.n > 0 {
			size := len(p.mu.ring)
			k := min(req.Size, p.mu.n)
			first := min(k, size-p.mu.r)
			data := [][]byte{p.mu.ring[p.mu.r : p.mu.r+first]}
			if k > first {
				data = append(data, p.mu.ring[:k-first])
			}
			p.mu.lent = k
			p.mu.Unlock()
			return cuse.ReadResult{Data: data, Done: func(delivered bool) {
				p.mu.Lock()
				p.mu.lent = 0
				if delivered {
					p.mu.r = (p.mu.r + k) % size
					p.mu.n -= k
				}
				ws := p.changedLocked() // room to write, or the bytes to read again
				p.mu.Unlock()
				<-p.readTurn
				wakeAll(ws)
			}}, nil
		}
		eof, changed := h.eofLocked(), p.mu.changed
		p.mu.Unlock()
		switch {
		case eof:
			<-p.readTurn
			return cuse.ReadResult{}, nil
		case req.Nonblock():
			<-p.readTurn
			return cuse.ReadResult{}, syscall.EAGAIN
		}
		select {
		case <-changed:
		case <-ctx.Done():
			<-p.readTurn
			return cuse.ReadResult{}, ctx.Err()
		}
	}
}

func (h *handle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	p := h.p
	if err := take(ctx, p.writeTurn); err != nil {
		return 0, err
	}
	defer func() { <-p.writeTurn }()
	taken := 0
	for _, src := range req.Data {
		for len(src) > 0 {
			p.mu.Lock()
			size := len(p.mu.ring)
			if free := size - p.mu.n; free > 0 {
				w := (p.mu.r + p.mu.n) % size
				k := copy(p.mu.ring[w:min(size, w+free)], src)
				p.mu.n += k
				src = src[k:]
				taken += k
				ws := p.changedLocked()
				p.mu.Unlock()
				wakeAll(ws)
				continue
			}
			changed := p.mu.changed
			p.mu.Unlock()
			if req.Nonblock() {
				if taken > 0 {
					return taken, nil
				}
				return 0, syscall.EAGAIN
			}
			select {
			case <-changed:
			case <-ctx.Done():
				if taken > 0 {
					return taken, nil
				}
				return 0, ctx.Err()
			}
		}
	}
	return taken, nil
}

func (h *handle) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	p := h.p
	p.mu.Lock()
	defer p.mu.Unlock()
	// The reader may see a reply before its Done runs: the bytes it holds
	// are no longer readable, and a poll that follows must not see them.
	var ev uint32
	if p.mu.n > p.mu.lent {
		ev |= cuse.EventIn | cuse.EventRdNorm
	}
	if p.mu.n == p.mu.lent && p.mu.writers == 0 && p.mu.hangups > h.seen {
		ev |= cuse.EventIn | cuse.EventRdNorm | cuse.EventHup
	}
	if p.mu.n < len(p.mu.ring) {
		ev |= cuse.EventOut | cuse.EventWrNorm
	}
	return ev & (req.Events | cuse.EventHup | cuse.EventErr), nil
}

func (h *handle) Release(ctx context.Context) {
	p := h.p
	p.mu.Lock()
	delete(p.mu.wakers, h)
	if h.writer {
		p.mu.writers--
		if p.mu.writers == 0 {
			p.mu.hangups++
		}
	}
	ws := p.changedLocked()
	p.mu.Unlock()
	wakeAll(ws)
}
