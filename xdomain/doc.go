// Package xdomain is the control plane between two hosts: names of remote
// hosts and services ("0-503", "0-503.0"), and — built on the pure codecs
// of its subpackages — the XDomain discovery exchange and the DMA path
// set-up in the host router.
//
// Subpackages hold the wire formats and do no I/O:
//   - ctl: control packets (route header, CRC-32C, config READ/WRITE/ERROR/
//     EVENT/RESET);
//   - xdp: XDomain discovery messages carried in XDOMAIN_REQ/RESP packets;
//   - property: property blocks, byte-exact with Linux.
//
// The package knows nothing of CUSE or FUSE.
package xdomain
