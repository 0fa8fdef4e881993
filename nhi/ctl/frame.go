// Package ctl is the Thunderbolt/USB4 control-packet codec: the frames that
// cross NHI ring 0 between a connection manager and routers, and between
// host routers for XDomain traffic.
//
// A control frame is a packet body of big-endian dwords followed by a
// big-endian CRC-32C of those bytes; the frame's PDF (both SOF and EOF of the
// ring descriptor) is the packet [Type]. The body starts with a two-dword
// [Header] carrying the route string. Config READ, WRITE, ERROR, EVENT and
// RESET packets have fixed layouts that this package encodes and decodes
// exactly; every other type (XDomain requests and responses, ICM traffic) is
// returned as a [Raw] body for higher layers to interpret.
//
// Everything here is pure: no I/O, no ring, no retry policy. The ring-0
// channel that sends and matches these packets lives in package nhi; the
// XDomain discovery messages carried in XDOMAIN_REQ/RESP bodies live in
// package xdomain/xdp.
package ctl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Frame size limits of the control channel (ring 0 runs in RAW mode with
// 256-byte frames).
const (
	MaxFrameSize = 256                    // TB_FRAME_SIZE
	CRCSize      = 4                      // trailing CRC-32C
	MaxBodySize  = MaxFrameSize - CRCSize // 252 bytes, 63 dwords
	MaxBodyWords = MaxBodySize / 4
)

// Sentinel errors; wrapped errors carry the details. Test with errors.Is.
var (
	ErrShort   = errors.New("control frame too short")
	ErrAlign   = errors.New("control frame length not a multiple of 4")
	ErrTooLong = errors.New("control frame longer than 256 bytes")
	ErrCRC     = errors.New("control frame CRC mismatch")
	ErrLength  = errors.New("control packet length does not match its type")
	ErrRoute   = errors.New("route string out of range")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC returns the control-channel checksum of b: standard CRC-32C
// (Castagnoli, inverted init and result), as Linux's
// ~crc32c(~0, b) computes it.
func CRC(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// AppendFrame appends the wire form of body to dst: each dword big-endian,
// then the CRC-32C of those bytes, big-endian.
func AppendFrame(dst []byte, body []uint32) ([]byte, error) {
	if len(body) > MaxBodyWords {
		return dst, fmt.Errorf("append frame of %d dwords: %w", len(body), ErrTooLong)
	}
	start := len(dst)
	for _, w := range body {
		dst = binary.BigEndian.AppendUint32(dst, w)
	}
	return binary.BigEndian.AppendUint32(dst, CRC(dst[start:])), nil
}

// ParseFrame checks a received frame (length, alignment, CRC) and returns
// its body as host-order dwords, without the CRC.
func ParseFrame(frame []byte) ([]uint32, error) {
	if err := CheckFrame(frame); err != nil {
		return nil, err
	}
	n := len(frame) - CRCSize
	body := make([]uint32, n/4)
	for i := range body {
		body[i] = binary.BigEndian.Uint32(frame[4*i:])
	}
	return body, nil
}

// CheckFrame validates a frame's length, alignment and CRC without
// decoding it.
func CheckFrame(frame []byte) error {
	switch {
	case len(frame) < CRCSize:
		return fmt.Errorf("frame of %d bytes: %w", len(frame), ErrShort)
	case len(frame)%4 != 0:
		return fmt.Errorf("frame of %d bytes: %w", len(frame), ErrAlign)
	case len(frame) > MaxFrameSize:
		return fmt.Errorf("frame of %d bytes: %w", len(frame), ErrTooLong)
	}
	n := len(frame) - CRCSize
	want := binary.BigEndian.Uint32(frame[n:])
	if got := CRC(frame[:n]); got != want {
		return fmt.Errorf("frame crc %#08x, computed %#08x: %w", want, got, ErrCRC)
	}
	return nil
}
