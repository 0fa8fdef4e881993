package stream

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"tbstream/configfs"
	"tbstream/cuse"
	"tbstream/hopid"
	"tbstream/xdomain"
	"tbstream/xdomain/property"
	"tbstream/xdomain/xdp"
)

// Stream is one <group>/<name> item and its /dev/tbstream<index> node
// (Linux's tbstream_dev). The package doc gives the lock order.
type Stream struct {
	g     *Group
	name  string
	index int
	node  Node

	// sigMu is a leaf lock for changed and wakers: nothing is called and
	// nothing waits while it is held, so signal may run under any lock,
	// on the NHI's interrupt goroutine included.
	sigMu   sync.Mutex
	changed chan struct{} // closed and replaced on every change of state
	wakers  map[*handle]struct{}
	// wakeList is the open handles' Wakers, replaced (never changed in
	// place) when a handle comes or goes: a copy taken under sigMu can be
	// called after it.
	wakeList []cuse.Waker
	// outWanted: a poll found no TX room; the next TX completion calls
	// the wakers (ringNotify).
	outWanted atomic.Bool
	// kick (capacity 1) tells the notifier goroutine that the wakers are
	// due; done ends it once the stream is finished.
	kick chan struct{}
	done chan struct{}

	// lend is the WRITE buffers lent to the CUSE server (lend.go).
	lend lender

	// waiting counts opens blocked for the peer or for another open's
	// start or a close's stop (Info.Waiting).
	waiting atomic.Int32

	// mu protects everything below. It is held only for bookkeeping: never
	// across a wait, control-channel I/O, a ring operation (other than
	// reading a ring's index) or a call into the node or a waker.
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

	users int // open handles, and the opener starting a ring pair
	// data is the open ring pair new opens share; nil while none is open
	// for the current attachment.
	data *rings
	// live are the ring pairs whose DMA paths may be programmed: starting,
	// open, stopping, or detached with their paths still going down. A new
	// pair starts only when there is none (same HopIDs, same router).
	live    []*rings
	closed  bool // a CLOSE frame was read; reads give EOF, writes ENXIO
	removed bool // rmdir'd
	// What one session leaves to the next (session.go): await, the
	// CLOSEs the peer owes us (each ends what it sent for a session of
	// ours that ended); owe, the CLOSEs we owe the peer; carry and
	// carryClose, what the peer sent for our next session while the last
	// was closing.
	await, owe int
	carry      [][]byte
	carryClose bool
	finished   bool // removed and done: HopIDs and index released
	// retakeDue: the peer's announcement changed while the stream could
	// not take it (open or closing); it is read again once idle.
	retakeDue bool
	stats     Counters
}

// Counters are a stream's traffic since mkdir.
type Counters struct {
	TxBytes, TxFrames, RxBytes, RxFrames uint64
	// TxLentBytes counts the bytes of TxBytes posted from the buffers
	// lent to the CUSE server for WRITE payloads, with no copy in user
	// space; the rest were copied into the TX ring's own buffers.
	TxLentBytes uint64
	// RxFrameErrors counts frames the NHI flagged (CRC error, buffer
	// overrun); like Linux, their data is still delivered.
	RxFrameErrors uint64
	// Undelivered counts bytes that write(2) queued and that no reader
	// of the session they were written for got: discarded when the
	// peer's session ended first, or left when the last close could not
	// send them (no reader on the peer for 500 ms, a peer that went away,
	// a drain cut off after drainMax). Each such event logs one line.
	Undelivered uint64
	// RxDiscarded counts bytes that arrived for a session of ours that
	// had ended (its reader gone) and were thrown away, never read by a
	// later session.
	RxDiscarded uint64
}

func newStream(g *Group, name string, index int) *Stream {
	return &Stream{
		g:          g,
		name:       name,
		index:      index,
		ringSize:   DefaultRingSize,
		throttling: DefaultThrottling,
		changed:    make(chan struct{}),
		lend:       lender{size: lendBuffers, what: "stream " + g.name + "/" + name},
		wakers:     make(map[*handle]struct{}),
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
}

// DeviceName is the node name, tbstream<index>.
func (st *Stream) DeviceName() string { return "tbstream" + strconv.Itoa(st.index) }

// path is the stream's configfs path below stream/, for log lines.
func (st *Stream) path() string { return st.g.name + "/" + st.name }

// signal wakes everything that waits on the stream's state: blocked
// opens and writes at once, pollers and parked READs through their wakers
// on the notifier goroutine. It never blocks and may be called under any
// lock.
func (st *Stream) signal() {
	if len(st.changedLocked()) == 0 {
		return // a goroutine wake-up saved
	}
	select {
	case st.kick <- struct{}{}:
	default: // a round of wakers is due already
	}
}

// signalHere is signal for a caller that holds no lock, the RX ring's
// notification on the goroutine that delivered the frames: the wakers
// run here, so a parked READ is answered from this goroutine, with no
// other woken in between.
func (st *Stream) signalHere() {
	for _, w := range st.changedLocked() {
		w()
	}
}

// changedLocked closes and replaces changed, and returns the wakers.
func (st *Stream) changedLocked() []cuse.Waker {
	st.sigMu.Lock()
	defer st.sigMu.Unlock()
	close(st.changed)
	st.changed = make(chan struct{})
	return st.wakeList
}

// notifier calls the wakers after each signal, with no lock held.
func (st *Stream) notifier() {
	for {
		select {
		case <-st.kick:
		case <-st.done:
			return
		}
		st.sigMu.Lock()
		ws := st.wakeList
		st.sigMu.Unlock()
		for _, w := range ws {
			w()
		}
	}
}

// setWakersLocked rebuilds wakeList from wakers (sigMu held).
func (st *Stream) setWakersLocked() {
	ws := make([]cuse.Waker, 0, len(st.wakers))
	for h := range st.wakers {
		if h.wake != nil {
			ws = append(ws, h.wake)
		}
	}
	st.wakeList = ws
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

// dropLiveLocked forgets d's place in live.
func (st *Stream) dropLiveLocked(d *rings) {
	for i, x := range st.live {
		if x == d {
			st.live = append(st.live[:i], st.live[i+1:]...)
			return
		}
	}
}

// idle runs after a handle, a start or a ring pair's paths went away: a
// removed stream with nothing left releases its HopIDs and index, and a
// stream that missed a new announcement reads it now.
func (st *Stream) idle() {
	st.mu.Lock()
	fin := st.finishLocked()
	retake := !fin && st.retakeDue && !st.removed && len(st.live) == 0 && st.svc != nil
	if retake {
		st.retakeDue = false
	}
	st.mu.Unlock()
	if fin {
		st.finish(false)
	}
	if retake {
		st.g.retakeHopIDs()
	}
}

// finishLocked reports whether a removed stream has just become done (no
// handle, no start, no paths left): its HopIDs are released here, and the
// caller calls finish once it holds no lock.
func (st *Stream) finishLocked() bool {
	if !st.removed || st.finished || st.users > 0 || len(st.live) > 0 {
		return false
	}
	st.finished = true
	st.releaseHopIDsLocked()
	return true
}

// finish ends a removed stream: the device, the index, the notifier, and
// another try for the streams that wanted its HopIDs. sync is false when
// the caller may run inside the device's own server (a Release), which
// Node.Close waits for.
func (st *Stream) finish(sync bool) {
	end := func() {
		st.node.Close() // every lending is back once the server stopped
		st.lend.close()
	}
	if sync {
		end()
	} else {
		go end()
	}
	st.g.s.freeIndex(st.index)
	close(st.done)
	// The HopID spaces are the host's: streams of any group may have
	// wanted these, and st's own group may be gone (rmdir -p).
	st.g.s.retakeHopIDs()
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
// Any write while the device is open is EBUSY. A write during the last
// close's stop waits for it (with no lock held), as Linux's store waits on
// the stream's mutex: a HopID released while its path is still programmed
// could be given to another stream.
func (st *Stream) Store(ctx context.Context, attr configfs.Attr, value int64) error {
	for {
		ch := st.waitChan()
		st.mu.Lock()
		if st.users > 0 {
			st.mu.Unlock()
			return syscall.EBUSY
		}
		if len(st.live) == 0 {
			break
		}
		st.mu.Unlock()
		if err := st.wait(ctx, ch, nil, false); err != nil {
			return fmt.Errorf("%s: %v: wait for the last close: %w", st.path(), attr, syscall.EINTR)
		}
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
	st.mu.Unlock()
	st.signal()
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
	st.resetSessionsLocked()
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
// its HopIDs from it (the user wrote none) and has no ring pair using
// them (else it notes to read it again once it has none), and reports
// whether its HopIDs changed. Linux reads announcements only at attach, so
// a stream created before the peer announced stays unusable there.
func (st *Stream) takeRemoteHopIDs(remote *property.Dir) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.svc == nil || st.removed || st.inReq != 0 || st.outReq != 0 {
		return false
	}
	rin, rout := remoteHopIDs(remote, st.name)
	if rin < hopid.Min || rout < hopid.Min || (st.out == rin && st.in == rout) {
		return false
	}
	if len(st.live) > 0 {
		// Not while a ring pair is starting, open or closing: its paths
		// use the HopIDs we hold. (Handles left from before a detach hold
		// none.)
		st.retakeDue = true
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
// ENXIO, now and after a re-attach. The ring pairs become stale: a drain
// toward the gone peer stops, a start in progress is undone by its
// opener, and the paths of an open pair are taken down at once (on a
// goroutine: detach runs under the service and group locks), so that a
// re-attach can route the HopIDs to fresh rings; the rings of open
// handles stay until the last of them closes.
func (st *Stream) detach() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.releaseHopIDsLocked()
	st.svc = nil
	st.data = nil
	st.resetSessionsLocked()
	for _, d := range st.live {
		if d.stale {
			continue
		}
		d.stale = true
		d.cancelGone()
		if d.state == ringOpen {
			go st.retire(d)
		}
	}
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
// when the last handle has closed and the last paths are down (see
// finishLocked): a new stream given the same HopIDs would find them still
// routed.
func (st *Stream) Remove(ctx context.Context) error {
	st.mu.Lock()
	if st.removed {
		st.mu.Unlock()
		return nil
	}
	st.removed = true
	last := st.finishLocked()
	st.mu.Unlock()
	st.signal()
	st.node.Unlink()
	st.g.forget(st)
	if last {
		st.finish(true)
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
	// Waiting counts opens blocked for the peer, or for another open's
	// start or the last close's stop to finish.
	Waiting int
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
		Waiting: int(st.waiting.Load()),
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
	case st.users > 0 && (st.closed || st.data != nil && st.data.peerClosed):
		info.State = "closed by peer" // until this session's last close
	case st.users > 0:
		info.State = "open"
	case len(st.live) > 0:
		info.State = "closing"
	default:
		info.State = "ready"
	}
	return info
}
