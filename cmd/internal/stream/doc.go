// Package stream is the USB4STREAM service of one host, with Linux 7.3's
// semantics, 7.4's handling of CLOSE on the write side, and session
// boundaries of its own (see Sessions): the objects behind the configfs
// directories (groups named after remote services, stream items with
// their attributes), the binding of groups to the peer's `stream`
// service, HopID allocation and the per-stream announcements in the
// property block, and the character devices: open, read, write, poll and
// close over an NHI TX/RX ring pair with the CLOSE frame and EOF.
//
// It fixes the upstream defects named in the design: RX is primed and the
// rings started before the DMA paths are enabled; attaching allocates both
// HopIDs or neither; HopIDs are released and no longer shown after a
// detach, so a re-attach asks again for what the user wrote or what the
// peer announces; an announcement that arrives after our mkdir is picked up;
// read and write loop over the whole request (no 7.2 short-loop bug).
// A refused HopID write leaves the HopID the stream had (Linux has already
// released it), and an exact request for a taken HopID is always EBUSY
// (Linux answers ENOSPC when that value and every one above it are in
// use). Device indexes are the lowest free per daemon, not system-wide, so
// each emulated host has its own /dev/tbstream0, as the documentation
// shows for two machines.
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
//	Service.idxMu, Stream.lend.mu, Service.lend.mu (leaves, taken alone)
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
// goroutine. The wakers themselves (the device server's: NOTIFY_POLL, and
// another try of its parked READs, which calls Read) run with no lock
// held: on the goroutine that delivered RX frames (rxNotify, so a parked
// READ is answered from there), and otherwise on the stream's notifier
// goroutine after a signal. TX completions run them only when a poll or
// a non-blocking write found no room (outWanted).
//
// # Sessions
//
// A session, on one host, is the life of one ring pair: from the open
// that starts it to the release of the last handle that shares it. Through
// CUSE, close(2) returns only once the release is done, so a process that
// opens the node after another closed it starts a new session. The FUSE
// fallback sends RELEASE after close(2) has returned; there, an open that
// finds every handle of the session closed by its process (FLUSH) and
// unused since waits up to flushIdle for their release, and then starts
// the next session (a handle still in use, a descriptor dup'ed before the
// close, shows itself by its I/O; the open then joins it).
//
// USB4STREAM has no session number on the wire: each direction carries
// the sender's DATA frames and, at the end of each of its sessions that
// met one of the peer's, one CLOSE frame. The CLOSE frames are the only
// boundaries, and the rule kept here is: **no DATA or CLOSE of an ended
// session reaches a later one; a byte is delivered once, in order, to the
// session it was written for, or the writer is told.** Each end does the
// following, with only DATA and CLOSE frames (a Linux peer sees a
// stream as from another Linux host):
//
//  1. The peer's CLOSE is seen as soon as it completes in the RX ring (the
//     RX completion path reads each new frame's EOF PDF), not only when a
//     reader reaches it. On an open session it means the peer's session
//     ended first ("closed by peer" in Info.State):
//     - writes, and a write waiting for a TX slot, fail with ENXIO, and
//     poll reports OUT (a write no longer blocks);
//     - the RX path goes down at once: nothing more is taken for this
//     session (reads still return what came before the CLOSE, then EOF),
//     and what the peer sends next waits at the peer for our next session;
//     - what write(2) had queued and the peer had not taken is discarded
//     (the TX ring is stopped and started again empty) and counted in
//     Counters.Undelivered, with one log line; the fallback's close(2)
//     then fails with EIO (Flush);
//     - to a peer that keeps sessions (StnsSessions in its service's
//     protocol settings), our CLOSE goes at once as the answer: it leaves
//     after the RX path went down, so the peer knows that what it sends
//     after it cannot land in this session.
//  2. The last close of a session the peer has not ended ("ends first",
//     linger): our CLOSE goes behind what write(2) queued, and the RX ring
//     keeps taking frames: what the peer sent for this session is
//     discarded as it comes (Counters.RxDiscarded), until the peer's CLOSE
//     arrives: its answer, or its own CLOSE when both sessions ended at
//     once (then the peer waits for ours as we did for its: if ours has
//     not left, what we queued is discarded and it goes at once). What
//     follows the peer's CLOSE belongs to the peer's next session:
//     the RX path goes down, and it is carried over to our next session,
//     which reads it first. The close is bounded: the TX drain as before
//     (flushIdle without progress, drainMax in all); a CLOSE with nothing
//     before it, from a session that exchanged nothing with the peer, is
//     taken back when the peer has not taken it within closeProbe (there
//     is no peer session to tell, and a later one must not get it); the
//     answer is waited for flushIdle after our CLOSE left, and then
//     awaited by the next session (4). A Linux peer sends its CLOSE only at
//     its own last close: the close ends when ours has left.
//  3. The last close of a session the peer ended: our answer must leave
//     (flushIdle without progress). A CLOSE the peer waits for that cannot
//     leave (this answer, or ours in 2 when both ended at once) is owed:
//     the next session sends it before anything else.
//  4. A session that starts while the peer owes us a CLOSE (its answer was
//     late) discards what arrives before that CLOSE, and its reads and
//     writes wait until it has come, for awaitMax at most: an answer that
//     arrived while no ring pair of ours was up is lost, and the peer's
//     next session may be waiting for this one's bytes. For the same
//     reason a closing session takes a CLOSE that came after its own
//     left as its answer, not as the awaited one.
//
// So a frame queued for an ended session never leaves afterwards (it is
// discarded at 1, or waits behind our CLOSE, which the peer's closing
// session takes at 2), and one that arrives for an ended session is
// discarded (2, 4); a CLOSE is consumed by the session it ends (1, 2) or
// by the await it answers (4). What is right in Linux stays: bytes
// written before the reader opens wait in TX for credits and are
// delivered when it opens (within the writer's close's bounds); a
// writer's close gives the reader every byte and then EOF.
//
// What is left, and said so: frames the peer sends for its next session
// in the instant between our closing session seeing its CLOSE and our RX
// path going down, and still on the cable when it goes down, are dropped
// by the link as real hardware drops them (what has arrived by then is
// carried over); that takes the peer closing, opening again and writing
// within that instant. A session that exchanged nothing and closes while
// a peer session is only just starting (within closeProbe) may end it.
// With a Linux peer, nothing answers: a CLOSE Linux sends after our close
// has ended reaches our next session, as between two Linux hosts. An
// answer later than awaitMax into our next session (the peer's reader
// took our CLOSE over a second after it arrived) ends that session.
//
// Differences from Linux, on purpose: Linux notices the peer's CLOSE only
// when read() reaches it (7.3; 7.4's "Improve CLOSE handling on write
// side" makes writes see it, which we follow), keeps taking frames after
// it, sends what was queued into the peer's next session, and answers
// nothing; its last close stops RX after TX (a 500 ms RX flush that always
// times out), losing what the peer's next session sent meanwhile; it
// posts its CLOSE only if a TX slot is free and otherwise loses it (7.3 in
// busy mode reaps up to 500 ms for one), so a close right after writes
// that filled the ring leaves the peer's reader without EOF; it loses a
// CLOSE that waited longer than its 500 ms flush, and delivers one that
// did not to whichever session the peer opens next. Its protocol settings
// are 0 where ours have StnsSessions.
//
// # Close
//
// The last close waits (no lock held) for the session's end as above,
// then stops both rings and takes the paths down (control-channel writes
// to our own host router, bounded by pathTimeout, normally well under
// 1 ms). Linux gives the TX flush 500 ms in all; a stuck peer (no
// reader, stopped reader) costs the same 500 ms here. A peer that keeps
// reading gets up to drainMax instead: cutting off a slow but live reader
// loses data that was about to arrive, and CUSE's close(2) waits for
// RELEASE, so the bound keeps close(2) finite.
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
// The FUSE fallback has one device server for every stream's file, whose
// readers lend before they know which file the next request is for: they
// borrow from the service's pool (Service.WriteBuffer, 4 MiB), which any
// stream's Write can post from, every ring pair of the host being on the
// same NHI.
//
// Payloads in any other memory are copied once into the TX ring's own
// buffers (reserved with TxReserve, posted with TxCommit): WRITEs read
// while the pool had nothing to lend (all lent or posted), when
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
