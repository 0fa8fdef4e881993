package stream

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"

	"tbstream/configfs"
	"tbstream/hopid"
	"tbstream/xdomain"
	"tbstream/xdomain/property"
	"tbstream/xdomain/xdp"
)

// Stream is one <group>/<name> item and its /dev/tbstream<index> node
// (Linux's tbstream_dev).
type Stream struct {
	g     *Group
	name  string
	index int
	node  Node

	// life serializes open and the last close, so that a new first open
	// never starts rings while the previous ones are being stopped. Take
	// it before mu.
	life sync.Mutex

	// sigMu is a leaf lock for changed and wakers: the NHI's interrupt
	// goroutine takes it, so it must never wait for anything.
	sigMu   sync.Mutex
	changed chan struct{} // closed and replaced on every change of state
	wakers  map[*handle]struct{}

	// mu protects everything below.
	mu sync.Mutex
	// What the user wrote to in_hopid/out_hopid (-1, 0 or a HopID), kept
	// across detach so that a re-attach asks for the same again.
	inReq, outReq int
	// The HopIDs allocated while attached (0: none).
	in, out    int
	svc        *xdomain.Service
	ringSize   int
	throttling uint32
	busyPoll   bool
	announceID xdp.UUID // of the announced directory; new each time it appears
	announced  bool

	users    int
	stopping bool // the last Release is stopping the rings and paths
	closed   bool // a CLOSE frame was read; reads give EOF, writes ENXIO
	removed  bool // rmdir'd
	data     *rings
	stats    Counters
}

// Counters are a stream's traffic since mkdir.
type Counters struct {
	TxBytes, TxFrames, RxBytes, RxFrames uint64
	// RxFrameErrors counts frames the NHI flagged (CRC error, buffer
	// overrun); like Linux, their data is still delivered.
	RxFrameErrors uint64
}

func newStream(g *Group, name string, index int) *Stream {
	return &Stream{
		g:          g,
		name:       name,
		index:      index,
		ringSize:   DefaultRingSize,
		throttling: DefaultThrottling,
		changed:    make(chan struct{}),
		wakers:     make(map[*handle]struct{}),
	}
}

// DeviceName is the node name, tbstream<index>.
func (st *Stream) DeviceName() string { return "tbstream" + strconv.Itoa(st.index) }

// signal wakes everything that waits on the stream's state: blocked
// opens, reads and writes, and pollers through their wakers.
func (st *Stream) signal() {
	st.sigMu.Lock()
	defer st.sigMu.Unlock()
	close(st.changed)
	st.changed = make(chan struct{})
	for h := range st.wakers {
		if h.wake != nil {
			h.wake()
		}
	}
}

// validLocked is tbstream_dev_valid: ENXIO without a live peer, EINVAL
// without both HopIDs.
func (st *Stream) validLocked() error {
	if st.svc == nil || st.svc.XDomain().Unplugged() {
		return syscall.ENXIO
	}
	if st.in <= 0 || st.out <= 0 {
		return syscall.EINVAL
	}
	return nil
}

// ---- configfs attributes ----

// Show returns an attribute. While detached the HopIDs read as written.
func (st *Stream) Show(ctx context.Context, attr configfs.Attr) (int64, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch attr {
	case configfs.AttrIndex:
		return int64(st.index), nil
	case configfs.AttrInHopID:
		if st.svc != nil {
			return int64(st.in), nil
		}
		return int64(st.inReq), nil
	case configfs.AttrOutHopID:
		if st.svc != nil {
			return int64(st.out), nil
		}
		return int64(st.outReq), nil
	case configfs.AttrRingSize:
		return int64(st.ringSize), nil
	case configfs.AttrThrottling:
		return int64(st.throttling), nil
	case configfs.AttrBusyPoll:
		if st.busyPoll {
			return 1, nil
		}
		return 0, nil
	}
	return 0, syscall.EINVAL
}

// Store sets an attribute; configfs has parsed and range-checked value.
// Any write while the device is open is EBUSY.
func (st *Stream) Store(ctx context.Context, attr configfs.Attr, value int64) error {
	st.mu.Lock()
	if st.users > 0 {
		st.mu.Unlock()
		return syscall.EBUSY
	}
	var err error
	announce := false
	switch attr {
	case configfs.AttrInHopID, configfs.AttrOutHopID:
		announce, err = st.storeHopIDLocked(attr == configfs.AttrInHopID, int(value))
	case configfs.AttrRingSize:
		st.ringSize = int(value)
	case configfs.AttrThrottling:
		st.throttling = uint32(value)
	case configfs.AttrBusyPoll:
		st.busyPoll = value != 0
	default:
		err = syscall.EINVAL
	}
	st.signal()
	st.mu.Unlock()
	if announce {
		st.g.announce()
	}
	return err
}

// storeHopIDLocked applies an in_hopid or out_hopid write: stored as is
// while detached (Linux validates nothing then), allocated in the peer's
// HopID space while attached.
func (st *Stream) storeHopIDLocked(in bool, value int) (announce bool, err error) {
	req, cur := &st.outReq, &st.out
	if in {
		req, cur = &st.inReq, &st.in
	}
	if st.svc == nil {
		*req = value
		return false, nil
	}
	space := st.svc.XDomain().HopIDs.Out
	if in {
		space = st.svc.XDomain().HopIDs.In
	}
	h, err := space.Update(*cur, value)
	*cur = h
	if err != nil {
		return true, err
	}
	*req = value
	return true, nil
}

// ---- attach and detach ----

// attach binds the stream to the peer's service (tbstream_dev_attach_stream):
// when the user set no HopIDs, they come from the peer's announcement of a
// stream of the same name (its inhopid is our out, its outhopid our in);
// both are allocated or neither (a clear log line says why). The caller
// holds the group lock and announces.
func (st *Stream) attach(svc *xdomain.Service) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.removed {
		return
	}
	st.svc = svc
	in, out := st.inReq, st.outReq
	if in <= 0 && out <= 0 {
		rin, rout := remoteHopIDs(svc.RemoteProperties(), st.name)
		if rin >= hopid.Min {
			out = rin
		}
		if rout >= hopid.Min {
			in = rout
		}
	}
	st.allocateLocked(in, out)
	st.signal()
}

// allocateLocked takes in and out (0: none) from the connection's spaces,
// both or neither.
func (st *Stream) allocateLocked(in, out int) {
	spaces := st.svc.XDomain().HopIDs
	st.in, st.out = 0, 0
	var gotIn int
	var err error
	if in != 0 {
		if gotIn, err = spaces.In.Alloc(in); err != nil {
			err = fmt.Errorf("in_hopid %d: %w", in, err)
		}
	}
	var gotOut int
	if err == nil && out != 0 {
		if gotOut, err = spaces.Out.Alloc(out); err != nil {
			spaces.In.Free(gotIn)
			gotIn = 0
			err = fmt.Errorf("out_hopid %d: %w", out, err)
		}
	}
	if err != nil {
		st.g.s.log.Warn("stream attached without HopIDs; write in_hopid and out_hopid", "stream", st.g.name+"/"+st.name, "err", err)
		return
	}
	st.in, st.out = gotIn, gotOut
}

// takeRemoteHopIDs re-reads the peer's announcement for a stream that gets
// its HopIDs from it (the user wrote none) and is not open, and reports
// whether its HopIDs changed. Linux reads announcements only at attach, so
// a stream created before the peer announced stays unusable there.
func (st *Stream) takeRemoteHopIDs(remote *property.Dir) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.svc == nil || st.removed || st.users > 0 || st.inReq != 0 || st.outReq != 0 {
		return false
	}
	rin, rout := remoteHopIDs(remote, st.name)
	if rin < hopid.Min || rout < hopid.Min || (st.out == rin && st.in == rout) {
		return false
	}
	spaces := st.svc.XDomain().HopIDs
	spaces.In.Free(st.in)
	spaces.Out.Free(st.out)
	st.allocateLocked(rout, rin)
	st.signal()
	return true
}

// remoteHopIDs returns the peer's inhopid and outhopid for stream name, or
// zeros.
func remoteHopIDs(remote *property.Dir, name string) (in, out int) {
	if remote == nil {
		return 0, 0
	}
	d := remote.FindDir(name)
	if d == nil {
		return 0, 0
	}
	if p := d.Find("inhopid", property.Value); p != nil {
		in = int(p.Value)
	}
	if p := d.Find("outhopid", property.Value); p != nil {
		out = int(p.Value)
	}
	return in, out
}

// detach unbinds the stream from a service that went away: HopIDs are
// released and no longer shown, waiters see HUP|ERR, open handles get
// ENXIO. Rings of open handles run until the last close.
func (st *Stream) detach() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.releaseHopIDsLocked()
	st.svc = nil
	st.signal()
}

func (st *Stream) releaseHopIDsLocked() {
	if st.svc != nil {
		spaces := st.svc.XDomain().HopIDs
		spaces.In.Free(st.in)
		spaces.Out.Free(st.out)
	}
	st.in, st.out = 0, 0
	st.announced = false
}

// announcement is the stream's directory for the property block, or nil
// when it lacks a HopID.
func (st *Stream) announcement() *property.Dir {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.svc == nil || st.removed || st.in < hopid.Min || st.out < hopid.Min {
		st.announced = false
		return nil
	}
	if !st.announced {
		// A new random UUID each time the entry is created (uuid_gen).
		if _, err := rand.Read(st.announceID[:]); err != nil {
			return nil
		}
		st.announceID[6] = st.announceID[6]&0x0f | 0x40
		st.announceID[8] = st.announceID[8]&0x3f | 0x80
		st.announced = true
	}
	d := property.NewDir(&st.announceID)
	_ = d.AddValue("inhopid", uint32(st.in))
	_ = d.AddValue("outhopid", uint32(st.out))
	return d
}

// Remove is rmdir of the item: the node goes away at once, open handles see
// EOF on read and ENXIO on write, and the HopIDs and the index are released
// when the last handle closes.
func (st *Stream) Remove(ctx context.Context) error {
	st.mu.Lock()
	if st.removed {
		st.mu.Unlock()
		return nil
	}
	st.removed = true
	// A stream whose last close is still taking its rings and paths down
	// keeps its HopIDs and index until that is done (Release frees them):
	// a new stream given the same HopIDs would find them still routed.
	last := st.users == 0 && !st.stopping
	if last {
		st.releaseHopIDsLocked()
	}
	st.signal()
	st.mu.Unlock()
	st.node.Unlink()
	st.g.forget(st)
	if last {
		st.node.Close()
		st.g.s.freeIndex(st.index)
		st.g.retakeHopIDs()
	}
	return nil
}

// Info is a snapshot of a stream for `tbstream list`.
type Info struct {
	Name       string
	Index      int
	Device     string
	InHopID    int
	OutHopID   int
	RingSize   int
	Throttling uint32
	BusyPoll   bool
	Users      int
	State      string
	Rings      [2]int // TX and RX ring index while open, else -1
	Counters
}

// Info returns a snapshot.
func (st *Stream) Info() Info {
	st.mu.Lock()
	defer st.mu.Unlock()
	in, out := st.inReq, st.outReq
	if st.svc != nil {
		in, out = st.in, st.out
	}
	info := Info{
		Name: st.name, Index: st.index, Device: st.DeviceName(),
		InHopID: in, OutHopID: out, RingSize: st.ringSize, Throttling: st.throttling,
		BusyPoll: st.busyPoll, Users: st.users, Counters: st.stats, Rings: [2]int{-1, -1},
	}
	if st.data != nil {
		info.Rings = [2]int{st.data.tx.Hop(), st.data.rx.Hop()}
	}
	switch err := st.validLocked(); {
	case st.removed:
		info.State = "removed"
	case errors.Is(err, syscall.ENXIO):
		info.State = "detached"
	case err != nil:
		info.State = "no hopids"
	case st.closed:
		info.State = "closed by peer"
	case st.users > 0:
		info.State = "open"
	default:
		info.State = "ready"
	}
	return info
}
