// Package fakekernel is the kernel side of a CUSE connection, in process,
// for tests that cannot open /dev/cuse (no root, no CUSE module).
//
// It owns a SOCK_SEQPACKET socketpair, which keeps message boundaries the
// way /dev/cuse does: the server reads one request per read and writes one
// reply per write. Channel returns the server's end as a cuse.Channel that
// applies the rules fs/fuse/dev.c applies to a real server:
//
//   - a read into less than max(8192, 80+max_write) bytes fails with EINVAL;
//   - a reply whose length field differs from what was written, or whose
//     error is outside -511..0, fails with EINVAL;
//   - a reply to a request that no longer exists fails with ENOENT;
//   - once the kernel end is closed, reads fail with ENODEV.
//
// The kernel end checks the CUSE_INIT reply as cuse_process_init_reply does
// (major 7, minor >= 11, a NUL-terminated devinfo with a non-empty
// DEVNAME), creates a stand-in node file 0600 in Config.DevDir as devtmpfs
// would and removes it when the server closes its end. Requests carry
// uniques that step by 2; INTERRUPT carries unique|1 and is queued again
// when the server answers it EAGAIN. Everything the server does wrong is
// recorded and returned by Violations.
//
// FUSE (a cuse.Dir's server) is played with raw messages: Reserve a call
// for its unique, SendRaw the request, Wait for the reply; the kernel end
// accepts FUSE_NOTIFY_INVAL_ENTRY besides NOTIFY_POLL (Invalidated lists
// the names). It does not model the page cache, the dentry cache,
// splicing, FUSE's own requests (it never sends FORGET or INIT by itself)
// or more than one connection.
package fakekernel
