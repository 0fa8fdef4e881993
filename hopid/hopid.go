// Package hopid allocates the fabric HopIDs of one XDomain connection with
// the semantics of Linux's tb_xdomain_alloc_{in,out}_hopid and the
// USB4STREAM attribute writes built on them.
//
// A connection has two independent spaces: input HopIDs (the peer transmits,
// we receive) range from 8 to our lane adapter's maximum input HopID; output
// HopIDs (we transmit) range from 8 to the maximum the peer announced in its
// `maxhopid` property, or 15 when it announced none. Every service on the
// connection shares the two spaces.
//
// Requests follow the configfs attributes: a negative value (the documented
// spelling is -1) allocates the lowest free HopID, a positive value asks for
// exactly that HopID, 0 releases. Errors wrap syscall.Errno values so that
// they reach users unchanged: EINVAL out of range, EBUSY taken, ENOSPC
// exhausted.
//
// The package knows nothing of paths, rings or properties.
package hopid

import (
	"fmt"
	"sync"
	"syscall"
)

const (
	// Min is the lowest HopID a path may use (TB_PATH_MIN_HOPID); 0..7 are
	// reserved by the Thunderbolt protocol.
	Min = 8
	// DefaultRemoteMax is the output maximum when the peer does not announce
	// maxhopid (TBT3 compatibility, per the USB4 inter-domain spec).
	DefaultRemoteMax = 15
	// Auto is the request for the lowest free HopID.
	Auto = -1
	// Release is the request that frees the current HopID.
	Release = 0
)

// Allocator holds the two HopID spaces of one XDomain connection.
type Allocator struct {
	In  *Space // HopIDs we receive on: Min..local maximum input HopID
	Out *Space // HopIDs we transmit on: Min..remote maxhopid
}

// New returns the spaces of a connection whose lane adapter accepts input
// HopIDs up to localMax and whose peer announced remoteMax; remoteMax ≤ 0
// means the peer did not announce one.
func New(localMax, remoteMax int) *Allocator {
	if remoteMax <= 0 {
		remoteMax = DefaultRemoteMax
	}
	return &Allocator{In: NewSpace("in", localMax), Out: NewSpace("out", remoteMax)}
}

// Space is one range of HopIDs, Min..Max inclusive. It is safe for
// concurrent use.
type Space struct {
	name string

	mu   sync.Mutex
	max  int
	used map[int]bool
}

// NewSpace returns an empty space from Min to max inclusive; name appears in
// errors ("in", "out").
func NewSpace(name string, max int) *Space {
	return &Space{name: name, max: max, used: make(map[int]bool)}
}

// Max returns the highest HopID the space hands out.
func (s *Space) Max() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max
}

// SetMax changes the highest HopID, as when the peer announces a new
// maxhopid. HopIDs already allocated above it stay allocated until released.
func (s *Space) SetMax(max int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max = max
}

// Alloc allocates a HopID: req < 0 takes the lowest free one, req > 0
// exactly req. It fails with EINVAL when req is outside Min..Max (or 0),
// EBUSY when the exact HopID is taken, ENOSPC when none is free.
func (s *Space) Alloc(req int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alloc(req)
}

func (s *Space) alloc(req int) (int, error) {
	if req < 0 {
		for h := Min; h <= s.max; h++ {
			if !s.used[h] {
				s.used[h] = true
				return h, nil
			}
		}
		return 0, fmt.Errorf("allocate %s hopid: all of %d..%d taken: %w", s.name, Min, s.max, syscall.ENOSPC)
	}
	if req < Min || req > s.max {
		return 0, fmt.Errorf("allocate %s hopid %d: outside %d..%d: %w", s.name, req, Min, s.max, syscall.EINVAL)
	}
	if s.used[req] {
		return 0, fmt.Errorf("allocate %s hopid %d: %w", s.name, req, syscall.EBUSY)
	}
	s.used[req] = true
	return req, nil
}

// Free releases h; freeing a HopID that is not allocated (including 0 and
// negative values) does nothing.
func (s *Space) Free(h int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.used, h)
}

// Update applies an attribute write to a stream's current HopID and returns
// the new value, as the USB4STREAM driver does: the current HopID is
// released unless it equals req; req 0 leaves the stream without a HopID;
// anything else is allocated with Alloc, so asking again for the HopID the
// stream already holds is EBUSY, as on Linux.
//
// Unlike Linux, a failed update is transactional: the stream keeps its
// current HopID (Linux has already released it and leaves the attribute
// naming a HopID it no longer holds).
func (s *Space) Update(current, req int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	release := current > 0 && current != req && s.used[current]
	if release {
		delete(s.used, current)
	}
	if req == Release {
		return 0, nil
	}
	h, err := s.alloc(req)
	if err != nil {
		if release {
			s.used[current] = true
		}
		return current, err
	}
	return h, nil
}

// InUse reports whether h is allocated.
func (s *Space) InUse(h int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used[h]
}

// Len returns how many HopIDs are allocated.
func (s *Space) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.used)
}
