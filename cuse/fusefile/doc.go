// Package fusefile serves cuse.Devices as files of a FUSE mount: the
// fallback for kernels without CUSE (no /dev/cuse), where
// <dir>/tbstreamN stands in for /dev/tbstreamN. The same Device that the
// CUSE server serves works here unchanged.
//
// Files are opened with FOPEN_DIRECT_IO|FOPEN_NONSEEKABLE|FOPEN_STREAM, so
// every read(2) and write(2) reaches the device (no page cache, no
// offsets), split into requests of at most Options.MaxWrite bytes (1 MiB
// by default, FUSE's most: eight times what CUSE allows).
//
// Differences from CUSE, all forced by go-fuse or FUSE:
//
//   - No poll: go-fuse answers POLL with ENOSYS at mount time, which makes
//     the kernel report every file of the mount as always ready. So that
//     non-blocking clients (every Go os.File) cannot spin or hang, the
//     fallback clears O_NONBLOCK from every read and write: they block
//     as if the file were in blocking mode (except the continuation
//     requests of one large read(2), see Read). Wakers are no-ops.
//   - No zero-copy WRITE: go-fuse owns the request buffers, so a
//     WriteBufferer is not asked. READ replies go out from the device's
//     memory without a copy, by one writev(2) of the header and up to
//     MaxReplySlices slices (reads ask for that many).
//   - A READ reply whose delivery fails cannot be detected: Done is always
//     called with delivered true.
//   - Opens also see FLUSH (answered 0) and size-0 SETATTR from O_TRUNC
//     (accepted and ignored, as a character device would).
//
// As with CUSE:
//
//   - A signal caught by the thread blocked in open(2), read(2) or write(2)
//     makes the kernel send FUSE_INTERRUPT; go-fuse closes the request's
//     fuse.Context (the ctx the device gets), and the device's ctx.Err()
//     reaches the caller as EINTR. No mount option is needed.
//   - A panic in a call into the device (Open, Read, Write, Release, a
//     ReadResult's Done) fails that syscall with EIO (close(2) still
//     succeeds), is logged in one error line with the stack and counted
//     (Dir.Panics); go-fuse's own panic handler, for anything else, does
//     the same.
//
// It does not emulate /dev (use a bind mount for that), and does not know
// what the device carries.
package fusefile
