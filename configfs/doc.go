// Package configfs presents the kernel's USB4STREAM configuration tree,
// /sys/kernel/config/thunderbolt/stream/, as a FUSE file system with configfs's exact
// behaviour, so that the kernel documentation's commands work verbatim:
//
//	mkdir thunderbolt/stream/0-1.0              a group: <domain>-<route hex>.<service>
//	mkdir thunderbolt/stream/0-1.0/backup       a stream item, name of at most 8 bytes
//	echo -1 > thunderbolt/stream/0-1.0/backup/in_hopid
//	cat thunderbolt/stream/0-1.0/backup/index
//	cd thunderbolt/stream && rmdir -p 0-1.0/backup
//
// It owns the tree, the names, the attribute files, their text formats and parsing, and
// every errno configfs and the stream driver give for them. It knows nothing of rings,
// HopID allocation or devices: it calls a Backend (make a group, make an item, show or
// store an attribute, remove), which the daemon implements; MemBackend is an in-memory
// one for tests and development.
//
// # Tree
//
// The mount's root is the configfs root; it holds thunderbolt/ (the subsystem) and
// thunderbolt/stream/ (its default group). Bind the mount over /sys/kernel/config and
// paths are the kernel's. Every directory is 0755 and every attribute 0644 (index 0444),
// owned by root, whatever mode mkdir asked for.
//
//	stream/<group>/<item>/index       read-only, "%d\n"
//	                      in_hopid    kstrtoint base 0 ("-1", "8", "0x8", "010", "+8")
//	                      out_hopid   kstrtoint base 0
//	                      ring_size   kstrtouint base 0, 32..4096
//	                      throttling  kstrtouint base 0, 0..16776960
//	                      busy_poll   kstrtobool ("1", "y", "on", "0", "n", "off", ...)
//
// # Errors
//
// As on a kernel with thunderbolt_stream:
//
//   - mkdir: a group name that is not <digits>-<hex digits>.<digits> is EINVAL; an item
//     name over 8 bytes ENAMETOOLONG; an existing name EEXIST; anywhere but stream/ and a
//     group EPERM; a backend returning nothing ENOMEM, a backend error its errno.
//   - rmdir: a group with items ENOTEMPTY (so `rmdir -p group/item` stops there when a
//     sibling remains); thunderbolt/ and stream/ EPERM; a backend error its errno (EBUSY
//     models configfs's dependents).
//   - creating a file EACCES; unlink, rename, link, symlink and mknod EPERM; extended
//     attributes EOPNOTSUPP.
//   - attribute writes: parse errors EINVAL, integer overflow ERANGE (the kstrto*
//     results), out-of-range ring_size and throttling EINVAL, then whatever the backend
//     returns (EBUSY while the device is open, EINVAL/EBUSY/ENOSPC for HopIDs). An open
//     for writing of index, or of any attribute without a write bit, is EACCES even for
//     root. A file still open after its item was removed answers ENOENT.
//
// A backend error that is not a syscall.Errno reaches the user as EIO and is logged once.
// So does a backend call that panics: the syscall fails with EIO, one error line gives
// the panic value and the stack, Server.Panics counts it, and the mount serves on.
//
// # Reads and writes
//
// Every write(2) is one store() of its first 4095 bytes, wherever the offset points (so
// `echo 8 >> attr` works) and its result is the count taken or the errno. The kernel's C
// string ends at the first NUL; exactly one trailing newline is allowed. Opening with
// O_TRUNC (`echo 8 > attr`) and truncate(1) are accepted and store nothing. The first read
// after open, or after a write on the same file, calls show(); later reads at any offset
// are served from that text, as configfs does. Attributes report size 4096.
//
// chmod, chown and touch succeed for root and stick until the item is removed, as
// configfs keeps them; a mode without write bits then refuses writes even to root.
//
// # Caching and inodes
//
// Nothing is cached by the kernel: entry, attribute and negative timeouts are zero and
// attributes use direct I/O, so every command sees the backend's current state. The tree
// is an authoritative model inside the package and the FUSE nodes are a view of it with
// stable inode numbers (never reused), so a node survives `echo 3 >
// /proc/sys/vm/drop_caches` unchanged.
//
// # Permissions
//
// The mount uses default_permissions and allow_other: everyone may list and read, only
// root may make, remove or write, and the kernel checks modes itself.
//
// # Concurrency
//
// FUSE requests run on many goroutines. mkdir and rmdir hold the tree's lock across their
// backend call, so they are atomic with respect to each other and to lookups. Show and
// Store hold only their item's lock, shared, so they run concurrently with each other but
// never with the item's removal.
//
// # Differences from configfs
//
// The file system type is fuse.configfs; attributes always report size
// 4096 and do not support poll (irrelevant for attributes); a busy unmount
// detaches lazily. Every attribute write and read goes to the backend
// (nothing is cached, by design), so each costs a FUSE round trip.
package configfs
