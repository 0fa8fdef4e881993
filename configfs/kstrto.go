package configfs

import (
	"math"
	"syscall"
)

// The kernel's string-to-number helpers as documented in include/linux/kstrtox.h and
// Documentation/core-api/kernel-api: what users can type into an attribute. Go's strconv is
// laxer (it takes "0b", "0o" and "_"), so the grammar is written out here.
//
//	kstrtoull(s, 0): ["+"] ("0x"|"0X") hexdigits | "0" octdigits | decimal, then at most one
//	                 "\n" and nothing else. A "0x" not followed by a hex digit is an octal 0
//	                 followed by junk. Overflow is ERANGE (checked before trailing junk), no
//	                 digits or junk is EINVAL.
//	kstrtoll(s, 0):  ["-"] kstrtoull without its "+", or kstrtoull; out of int64 is ERANGE.
//	kstrtoint/kstrtouint: the same, ERANGE outside 32 bits.
//	kstrtobool:      the first byte decides: one of "yYtT1" true, "nNfF0" false, "on"/"off"
//	                 (any case) by the second byte; anything else, "" included, EINVAL.

// parseULL is _kstrtoull with base 0.
func parseULL(s string) (uint64, syscall.Errno) {
	base := uint64(10)
	if len(s) > 0 && s[0] == '0' {
		base = 8
		if len(s) > 2 && (s[1]|0x20) == 'x' && hexDigit(s[2]) >= 0 {
			base = 16
			s = s[2:]
		}
	}
	var v uint64
	overflow := false
	n := 0
	for ; n < len(s); n++ {
		d := hexDigit(s[n])
		if d < 0 || uint64(d) >= base {
			break
		}
		if v > (math.MaxUint64-uint64(d))/base {
			overflow = true
		}
		v = v*base + uint64(d)
	}
	if overflow {
		return 0, syscall.ERANGE
	}
	if n == 0 {
		return 0, syscall.EINVAL
	}
	rest := s[n:]
	if len(rest) > 0 && rest[0] == '\n' {
		rest = rest[1:]
	}
	if rest != "" {
		return 0, syscall.EINVAL
	}
	return v, 0
}

func hexDigit(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c|0x20 && c|0x20 <= 'f':
		return int(c|0x20-'a') + 10
	}
	return -1
}

// kstrtoull is parseULL after an optional '+'.
func kstrtoull(s string) (uint64, syscall.Errno) {
	if len(s) > 0 && s[0] == '+' {
		s = s[1:]
	}
	return parseULL(s)
}

func kstrtoll(s string) (int64, syscall.Errno) {
	if len(s) > 0 && s[0] == '-' {
		u, errno := parseULL(s[1:])
		if errno != 0 {
			return 0, errno
		}
		if u > 1<<63 {
			return 0, syscall.ERANGE
		}
		return int64(-u), 0 // -(1<<63) wraps to MinInt64, as in the kernel
	}
	u, errno := kstrtoull(s)
	if errno != 0 {
		return 0, errno
	}
	if u > math.MaxInt64 {
		return 0, syscall.ERANGE
	}
	return int64(u), 0
}

func kstrtoint(s string) (int32, syscall.Errno) {
	v, errno := kstrtoll(s)
	if errno != 0 {
		return 0, errno
	}
	if v != int64(int32(v)) {
		return 0, syscall.ERANGE
	}
	return int32(v), 0
}

func kstrtouint(s string) (uint32, syscall.Errno) {
	v, errno := kstrtoull(s)
	if errno != 0 {
		return 0, errno
	}
	if v > math.MaxUint32 {
		return 0, syscall.ERANGE
	}
	return uint32(v), 0
}

func kstrtobool(s string) (bool, syscall.Errno) {
	if s == "" {
		return false, syscall.EINVAL
	}
	switch s[0] {
	case 'y', 'Y', 't', 'T', '1':
		return true, 0
	case 'n', 'N', 'f', 'F', '0':
		return false, 0
	case 'o', 'O':
		if len(s) > 1 {
			switch s[1] {
			case 'n', 'N':
				return true, 0
			case 'f', 'F':
				return false, 0
			}
		}
	}
	return false, syscall.EINVAL
}
