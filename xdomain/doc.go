// Package xdomain is the control plane between two hosts: names of remote
// hosts and services ("0-503", "0-503.0"), and — built on the pure codecs
// of its subpackages — the XDomain discovery exchange and the DMA path
// set-up in the host router.
//
// It sits on the core: the NHI driver (package nhi), the router's
// config-space registers (nhi/tbregs.go) and the control-packet codec
// (nhi/ctl). Its subpackages hold the XDomain wire formats and do no I/O:
//   - xdp: XDomain discovery messages carried in XDOMAIN_REQ/RESP packets;
//   - property: property blocks, byte-exact with Linux.
//
// The package knows nothing of CUSE or FUSE.
//
// # Differences from Linux
//
// Each is deliberate:
//
//   - Strict parsing of peer data. Property blocks: entries and directory
//     headers must lie inside the block, a directory must be at least its
//     UUID long, and a directory referenced twice is refused (Linux could
//     read out of bounds or loop). Paged PROPERTIES reads: every page must
//     carry the same generation and length, stay inside the announced
//     length and make progress. XDP responses of an unexpected type are
//     dropped (Linux matches on route and protocol only). Malformed packets
//     are dropped and counted.
//   - Group names must match ^[0-9]+-[0-9a-fA-F]+\.[0-9]+$ exactly; Linux's
//     sscanf("%u-%llx.%u") also takes a sign, a 0x prefix and trailing
//     text, names that can never match a service.
//   - No lane bonding. LINK_STATE_STATUS is answered as Linux does (status
//     0) with the fields of one unbonded USB4 Gen 3 lane (slw 0x1, tlw 0x1,
//     sls 0xc, tls 0xc), so a Linux peer skips bonding at once and goes on
//     to PROPERTIES; LINK_STATE_CHANGE gets NOT_READY, Linux's answer
//     outside its BONDING_UUID_HIGH state. tbstream never sends LINK_STATE
//     requests. TestLinuxPeerSkipsBondingEitherUUIDOrder runs Linux's state
//     machine against these answers for both UUID orders.
//   - DMA path credits: the TX hop takes TB_DMA_CREDITS (14); Linux reserves
//     them from the router's buffer allocation when it has one. The RX hop
//     takes min(usable credits, 14), as Linux does.
//   - Path entries are read before they are written, as Linux does, but one
//     routed elsewhere is refused (EBUSY) and one already routed the same
//     way is left alone; Linux relies on its HopID allocator and takes an
//     active entry down first. Disabling takes down only an entry that
//     routes where ours did.
//   - The topology (ROUTER_CS_1, ADP_CS_0..5, the control path's credits) is
//     read at each path set-up; Linux reads it once at enumeration.
//   - The router UUID is derived from the router UID (UID low, UID high,
//     0x80000000, 0xffffffff).
//
// sequence_test.go writes down, as tables, the register and path-entry
// accesses with which Linux starts and stops a ring (nhi.c) and enables and
// disables a DMA path (tunnel.c, path.c), each row with the Linux source it
// comes from, and compares what tbstream does with them row by row, in
// order; where tbstream differs on purpose, the row says how and why.
package xdomain
