// Package loopback is a bounded byte pipe served as a cuse.Device: what is
// written to the device node is read back from it, in order, by whoever
// reads next. The VM suite and the FUSE fallback tests use it as the
// simplest device that exercises every rule of the Device contract.
//
// Semantics (those of a FIFO, minus SIGPIPE):
//
//   - The pipe holds at most its capacity. A write blocks while it is full
//     and returns only when every byte is in (or, with O_NONBLOCK, takes
//     what fits and fails with EAGAIN when nothing does). An interrupted
//     write returns the bytes it took, or EINTR if none.
//   - A read blocks while the pipe is empty and returns what is there, up
//     to the size asked (O_NONBLOCK: EAGAIN when empty).
//   - End of file: when the last handle opened for writing (O_WRONLY or
//     O_RDWR) is released, the pipe hangs up; a reader that was open
//     before that reads what is left, then 0. A reader opened after a
//     hang-up waits for the next writer to come and go, as with a FIFO, so
//     a reader that happens to open before its writer never sees a stale
//     end of file. A reader opened O_RDWR is a writer too and never sees
//     end of file while it is open.
//   - Poll reports POLLIN when there are bytes or end of file (with
//     POLLHUP in the latter case) and POLLOUT when there is room; every
//     change wakes every handle's Waker.
//   - Reads are zero-copy: a READ reply is written straight from the ring,
//     and the bytes leave the pipe only once the kernel took the reply, so
//     an interrupted read loses nothing.
//
// It does not know which transport serves it, and it stores nothing on
// disk.
package loopback
