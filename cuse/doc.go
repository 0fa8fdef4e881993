// Package cuse serves character devices from user space: it registers a
// node (/dev/<name>) through /dev/cuse, or, where the kernel has no CUSE,
// serves the same devices as regular files of a FUSE mount (Dir, the
// fallback: <dir>/tbstreamN stands in for /dev/tbstreamN). One Server
// speaks both channels; a Device cannot tell them apart. It owns the wire
// protocol, the request loop, parking, interrupts, poll notifications,
// lent WRITE buffers, panic recovery and the node's mode and owner. It
// knows nothing of Thunderbolt or of what the devices carry; package
// cuse/loopback is a simple pipe Device, and package cuse/fakekernel is a
// kernel stand-in for tests. It has no third-party dependency: the wire
// structs are its own (proto.go).
//
// # Using it
//
//	srv, err := cuse.Open(dev, cuse.Options{Name: "tbstream0"}) // opens /dev/cuse
//	err = srv.Init(ctx)      // CUSE_INIT; the node exists when it returns
//	go srv.Serve(ctx)        // until ctx ends, Close, or the kernel aborts
//	...
//	srv.Close()              // the kernel removes the node
//
//	dir, err := cuse.MountDir("/run/tbstream/dev", cuse.DirOptions{}) // mount(2): root
//	err = dir.Add("tbstream0", cuse.File{Device: dev, Mode: 0o660})
//	dir.Remove("tbstream0")  // open handles go on
//	dir.Unmount()
//
// One Server is one /dev/cuse connection and one device, whose name must
// be unique among CUSE devices; or one FUSE mount and all of its files.
// NewServer takes any Channel, which is how tests run against
// cuse/fakekernel without root.
//
// # Protocol
//
// Every message is one read or one write of the channel, little-endian:
//
//	kernel → server   fuse_in_header (40 bytes)   len, opcode, unique, nodeid (0), uid, gid, pid
//	server → kernel   fuse_out_header (16 bytes)  len, -errno, unique
//
//	opcode          body in                    reply body             here
//	CUSE_INIT 4096  cuse_init_in 16            cuse_init_out 72 +     Init: 7.min(kernel,28),
//	                                           "DEVNAME=<name>\0"     max_read = max_write = 128 KiB,
//	                                                                  dynamic major, restricted ioctl
//	INIT 26         fuse_init_in 16..64        fuse_init_out 64       Init (Dir): 7.28, max_write and
//	                                                                  max_pages for 1 MiB, ASYNC_READ
//	OPEN 14         fuse_open_in 8             fuse_open_out 16       Device.Open; fh chosen here; a
//	                                                                  Dir's files are DIRECT_IO|STREAM
//	READ 15         fuse_read_in 40            data                   Handle.Read; writev of its slices
//	WRITE 16        fuse_write_in 40 + data    fuse_write_out 8       Handle.Write; readv into lent buffers
//	RELEASE 18      fuse_release_in 24         (none)                 Handle.Release (synchronous)
//	FLUSH 25        fuse_flush_in 24           (none)                 Flusher.Flush (Dir only)
//	INTERRUPT 36    fuse_interrupt_in 8        none, or EAGAIN        a parked READ: EINTR; else
//	                                                                  cancels the request's context
//	IOCTL 39        fuse_ioctl_in 32           ENOTTY                 the real driver has no ioctl
//	POLL 40         fuse_poll_in 24            fuse_poll_out 8        Handle.Poll; kh kept per fh
//	(notify)        –                          unique 0, error +1,    NOTIFY_POLL{kh} when a Waker
//	                                           fuse_notify_poll_wakeup_out 8   fires after a POLL asked
//
// A Dir also answers the file-system requests that finding, listing and
// stat'ing its files make (fs.go): LOOKUP, FORGET, BATCH_FORGET, GETATTR,
// SETATTR (O_TRUNC's truncate, accepted and ignored), STATFS, OPENDIR,
// READDIR, RELEASEDIR, DESTROY. Entries and attributes are valid for 0 s,
// so a removed file is gone at the next path walk.
//
// Anything else is answered ENOSYS and counted (the kernel then stops
// asking: xattrs, access, create). A request that does not parse is
// answered EIO and counted (dropped if its unique is 0); a reply the
// kernel refuses with EINVAL is logged and counted, and serving goes on.
// The kernel splits every read(2) and write(2) into requests of at most
// max_read/max_write (CUSE cannot raise max_pages above 32 pages; a FUSE
// mount can, to 256), with offsets counting from 0 within each syscall,
// and stops at the first short reply. The server uses the offset for one
// thing: a READ at a non-zero offset continues a read(2) that already has
// data, so the device sees it as non-blocking and "nothing now" becomes
// an empty reply that ends the syscall. A read(2) of 1 MiB therefore
// returns what the device has, as from a pipe, instead of waiting for the
// whole 1 MiB.
//
// # The Device contract
//
// Device.Open runs for every open(2) and returns a Handle, one per open
// file description; the server maps the kernel's fh to it. A Handle's
// methods may run concurrently (the kernel sends several requests at once
// when several threads use one fd); Release comes last, once.
//
// Blocking. Write and Open may block, but each gets a context that an
// INTERRUPT (the caller got a signal) or shutdown cancels. They must then
// return promptly: a write(2) waiting on the server cannot even be killed
// with SIGKILL until the server answers. Return ctx.Err() (the caller
// sees EINTR) or, for a write that took some bytes, the count. A device
// must not keep a request's context after the call returns.
//
// Reads are parked, not blocked (park.go). The server asks Read with
// O_NONBLOCK added and ReadRequest.Parkable set; on EAGAIN it keeps the
// request, with no goroutine waiting, and asks again, on the goroutine
// that calls the handle's Waker: the goroutine that delivered the data
// answers the READ, with one writev. So a blocked read(2) holds no reader
// and cannot starve a WRITE, and an INTERRUPT answers it EINTR at once. A
// device that has nothing to call its Waker when data comes (one that
// busy-polls) may block in a Parkable Read instead, honouring ctx.
//
// Non-blocking. O_NONBLOCK is per request (ReadRequest.Flags,
// WriteRequest.Flags), because fcntl(F_SETFL) is not announced to the
// server: Go's os.OpenFile sets it after the open. When the request is
// non-blocking and nothing can be done, return syscall.EAGAIN, and make
// sure a Waker fires when that changes, or the client sleeps forever.
//
// Poll. Poll returns the current readiness (EventIn, EventOut, EventHup,
// EventErr) without blocking. Each handle gets a Waker in its
// OpenRequest; call it, with none of the device's locks held, whenever
// readiness may have changed (bytes arrived, room freed, the stream hung
// up). The server sends NOTIFY_POLL for the handle's kh only if the
// kernel asked (FUSE_POLL_SCHEDULE_NOTIFY) since the last notification,
// and asks again for the parked READs; a call with nothing to do costs a
// lock. poll(2), select(2) and epoll work the same on a CUSE node and on
// a Dir's file.
//
// Errors. Return a syscall.Errno for what users should see (ENXIO, EBUSY,
// EINVAL...); a cancelled context becomes EINTR and anything else EIO with
// a log line (see Errno). Returning no data and no error from Read is end
// of file.
//
// Panics. A panic in any call into the device (Open, Read, Write, Poll,
// Flush, Release, a ReadResult's Done, a WriteBufferer and its done) fails that
// request with EIO (Release and Done have nothing to fail: close(2) still
// succeeds), is logged in one error line with the panic value and the
// stack, and is counted in Stats.Panics; the server and every other
// handle go on. A panic on a goroutine the device started itself is
// beyond the server's reach.
//
// Zero copy. A READ reply is written with one writev straight from the
// ReadResult's slices; ReadResult.Done(delivered) says when they are free
// again and whether the kernel took them (false when the request was
// interrupted meanwhile, so a stream loses nothing). A Device that also
// implements WriteBufferer lends the memory WRITE payloads are read into
// (for a Dir, one WriteBufferer for all its files: Dir.SetBuffers): the
// server reads each request with readv([80-byte head, lent buffers]) and
// hands the payload to Handle.Write as slices of those buffers.
//
// # Concurrency and interrupts
//
// Requests are read by a small pool of goroutines: a reader handles what
// it read itself (no hand-off on the fast path), and when the last idle
// reader takes a request it first starts another, so some goroutine is
// always reading the channel; when enough are idle, a finished one exits.
// Each reader keeps what handling a READ, WRITE or POLL needs (request
// structs, the reply header, the context), so the hot path allocates
// nothing (BenchmarkServerLoop). The CUSE channel is read through Go's
// netpoller (Close wakes its readers); a Dir's /dev/fuse in blocking mode
// (a request wakes a reader's thread directly, several µs sooner), whose
// readers end when Unmount ends the connection.
//
// Every request in a handler has a context in an in-flight map keyed by
// unique; INTERRUPT cancels it (under the server's lock, so a READ about
// to be parked sees it) and is not answered, or is answered EAGAIN when
// the target is not known yet (the INTERRUPT overtook its request between
// two readers), which makes the kernel queue it again.
//
// The kernel sends INTERRUPT when the thread waiting in open(2), read(2)
// or write(2) gets a signal it catches (or a fatal one). The reply EINTR
// reaches the caller as EINTR even under SA_RESTART: a FUSE reply cannot
// carry -ERESTARTSYS, which is what a kernel driver returns to have such
// calls restarted. As with any driver, a signal sent to a process
// interrupts only the thread it is delivered to (the main thread if it
// does not block it): another thread's blocked write(2) goes on waiting.
// poll(2) waits in the kernel, not in the device, and signals end it as
// usual.
//
// # Shutdown
//
// Serve ends when its context ends, Close is called, or the kernel ends
// the connection (ENODEV). It then cancels every request, closes the
// channel (the kernel removes the device and its node), waits for its
// goroutines, and releases every handle the kernel will no longer release.
// Dir.Unmount unmounts; when files are still open it detaches the mount
// and aborts the connection through fusectl (/sys/fs/fuse/connections,
// mounted if it is not), so their users' next call fails with ENOTCONN.
//
// # The node
//
// devtmpfs creates /dev/<name> as 0600 root:root, like the kernel's misc
// device; Init waits for it and applies NodeOptions (mode, owner). Without
// devtmpfs the server makes the node itself from /sys/class/cuse/<name>/dev
// and removes it at shutdown. udev rules must match SUBSYSTEM=="cuse", not
// "misc". The node's major differs from a misc device's (CUSE cannot claim
// major 10).
package cuse
