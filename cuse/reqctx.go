package cuse

import (
	"context"
	"sync"
	"time"
)

// reqCtx is the context of one READ, WRITE or POLL: a reader goroutine
// keeps one and reuses it for each such request it handles, so the hot
// path makes no context (context.WithCancel allocates, and registers with
// its parent). INTERRUPT and shutdown cancel it through the server's
// in-flight map, under Server.mu; its Done channel is made only when a
// device asks for it (a request that blocks), and kept for the next
// request unless it was closed.
//
// A device must not keep the context of a READ, WRITE or POLL after the
// call returns (the Device contract says so for every request).
type reqCtx struct {
	mu   sync.Mutex
	done chan struct{}
	err  error
}

var _ context.Context = (*reqCtx)(nil)

func (c *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *reqCtx) Value(any) any               { return nil }

func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

func (c *reqCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *reqCtx) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = context.Canceled
		if c.done != nil {
			close(c.done)
		}
	}
}

// reset readies c for the next request.
func (c *reqCtx) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		c.err, c.done = nil, nil
	}
}
