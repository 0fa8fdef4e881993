// Package stream is the USB4STREAM service of one host, with Linux 7.3's
// semantics: the objects behind the configfs directories (groups named
// after remote services, stream items with their attributes), the binding
// of groups to the peer's `stream` service, HopID allocation and the
// per-stream announcements in the property block, and the character
// devices: open, read, write, poll and close over an NHI TX/RX ring pair
// with the CLOSE frame and EOF.
//
// It fixes the upstream defects named in the design: RX is primed and the
// rings started before the DMA paths are enabled; attaching allocates both
// HopIDs or neither; HopIDs are released and no longer shown after a
// detach, so a re-attach asks again for what the user wrote or what the
// peer announces; an announcement that arrives after our mkdir is picked up;
// read and write loop over the whole request (no 7.2 short-loop bug).
//
// It knows nothing of FUSE or CUSE transports: configfs calls it through
// configfs.Backend, the device nodes through cuse.Device, and it registers
// nodes through the Devices interface the daemon provides.
//
// # Locks
//
// The order, outermost first:
//
//	Service.mu → Group.mu → Stream.mu → Stream.sigMu
//	Service.idxMu, Stream.lendMu (leaves, taken alone)
//
// Below them sit the locks of other packages the streams call while
// holding one of theirs: the HopID spaces (hopid) and xdomain.Service's
// own lock, both leaves. A stream never holds its locks across a call into
// an NHI ring (other than reading its index), the control channel, the
// device node or a waker.
//
// No lock is held across a wait. What waits, waits on Stream.changed, a
// channel closed and replaced at every change of state (signal), with the
// context of the request, and checks the state again afterwards:
//
//   - an open waits for the peer, for another open's start of the rings, or
//     for the last close's stop (a new ring pair uses the same HopIDs, so it
//     starts only once the old pair's paths are down);
//   - the opener that starts a ring pair allocates and starts the rings and
//     sets up the DMA paths (control-channel I/O, pathTimeout) unlocked: the
//     pair is in Stream.live in state "starting" meanwhile, and the stream
//     counts the opener as a user, so attribute writes are EBUSY. After the
//     I/O the opener re-checks: a detach or rmdir meanwhile makes it undo
//     the rings and paths and look again;
//   - the last close drains TX and takes the rings and paths down unlocked
//     (state "stopping"); an attribute write meanwhile waits for it;
//   - reads and writes wait for frames or slots.
//
// Attribute reads, Info, detach, rmdir and Service.Remove therefore never
// wait for the peer, the control channel or a drain.
//
// signal takes only sigMu, which guards nothing but the channel and the set
// of wakers, so it may run under any lock and on the NHI's interrupt
// goroutine. The wakers themselves (a CUSE waker takes the server's lock and
// writes NOTIFY_POLL) run on the stream's notifier goroutine, with no lock
// held, after each signal.
//
// # Close
//
// close(2) of the last handle of a ring pair (Release) first stops the RX
// ring, which hands its E2E credits back: frames the peer sends from then
// on (the first frames of a writer the peer opened for its next session,
// while this close drains) wait at the peer for the next ring pair rather
// than filling slots that are about to go. Linux stops RX last and loses
// them. A pair that never sent a frame and has seen the peer's CLOSE
// (read, or waiting in the RX ring) then stops without a CLOSE of its own
// or a drain: the session it belonged to is over on both ends, and the
// CLOSE could only reach the peer's next session as a stale EOF. Any other
// last close is bounded:
//
//   - a free TX slot for the CLOSE frame, and then the TX drain: they end
//     when the ring is empty, after flushIdle (500 ms) without a completed
//     frame, after drainMax (10 s) in all, or at once when the peer goes
//     away; a close with no peer does not drain. Linux posts the CLOSE
//     only if a slot is free (7.3 in busy mode reaps up to 500 ms for one)
//     and otherwise loses it: a close right after writes that filled the
//     ring leaves the peer's reader without EOF;
//   - disabling the DMA paths: control-channel writes to our own host
//     router, bounded by pathTimeout (5 s), normally well under 1 ms.
//
// Linux gives the TX flush 500 ms in all, then flushes RX for another
// 500 ms (which always times out, RX buffers being posted) and cancels what
// is left. A stuck peer (no reader, stopped reader) costs the same 500 ms
// here. A peer that keeps reading gets up to drainMax instead: cutting off
// a slow but live reader loses data that was about to arrive, and CUSE's
// close(2) waits for RELEASE, so the bound keeps close(2) finite. There is
// no RX flush: nothing can be delivered to our own RX ring after close.
//
// Bytes that write(2) queued and the close could not send are counted in
// Counters.Undelivered, and the close logs one line with the count and the
// reason (no progress, peer gone, drain limit). Linux drops them silently.
// Where FUSE sends FLUSH before the release (the fallback; CUSE has none),
// Flush does the drain's wait first and fails close(2) with EIO when the
// bytes cannot all arrive; the release then does not wait again.
//
// # Zero-copy writes
//
// A Stream is a cuse.WriteBufferer: the CUSE server reads each request
// with readv([80-byte head, lent buffers]), and a WRITE payload so lands
// in TX buffers of the stream's lend pool (an nhi.TxPool of 8 × 128 KiB,
// allocated from the NHI's DMA memory at the first lending while a ring
// pair is open). Write recognises its own buffers (the payload's slices
// are a prefix of a lending's runs) and posts them with TxCommit as they
// are: TX descriptors carry any pool's buffers, so lendings held by
// several request readers, for however long, never stand in the way of
// descriptors posted in ring order. A short write (fewer free descriptors
// than frames) posts whole frames and returns their bytes; the server's
// done(used) then gives the unposted buffers back, and posted ones return
// to the pool when their descriptors complete or the ring stops.
// Counters.TxLentBytes counts what went this way.
//
// The pool lives with the stream, not with a ring pair: readers hold
// lendings across opens, closes, unplugs and re-plugs, and the memory a
// reader may readv into must stay mapped. It is closed in finish, after
// the device's server has stopped (every lending is back then), and its
// memory is freed when the last posted buffer is back. All ring pairs of
// a stream are on the same NHI, so a lending is valid for whichever pair
// the WRITE's handle uses: there are no pool generations, and no WRITE is
// copied or refused for the age of its buffers.
//
// Payloads in any other memory are copied once into the TX ring's own
// buffers (reserved with TxReserve, posted with TxCommit): the FUSE
// fallback (go-fuse reads WRITEs into its own buffers), and CUSE WRITEs
// read while the pool had nothing to lend (all lent or posted), when
// WriteBuffer returns nil and the server uses its own buffer.
//
// # Detach and re-plug
//
// On detach (unplug, service gone) open handles fail with ENXIO and poll
// HUP|ERR, as on Linux. Their ring pair becomes stale: its paths are taken
// down at once, its rings stay until its last handle closes, and it stays
// ENXIO after a re-attach, when its paths would be for the old HopIDs.
// Opens after the re-attach get a fresh ring pair and fresh paths, even
// while stale handles are still open.
package stream
