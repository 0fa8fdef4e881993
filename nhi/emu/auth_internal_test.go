package emu

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCableProofOneWay: a proof names its sender's role and both hellos,
// so a host's own proof sent back to it never passes for the peer's, and
// a proof of one connection fails on any other.
func TestCableProofOneWay(t *testing.T) {
	key := []byte("0123456789abcdef")
	d := cableHello{UID: 1, Nonce: [32]byte{1}}.payload()
	l := cableHello{UID: 2, Nonce: [32]byte{2}}.payload()
	other := cableHello{UID: 2, Nonce: [32]byte{3}}.payload()
	p := cableProof(key, roleDialer, d, l)
	require.Len(t, p, cableAuthSize)
	require.Equal(t, p, cableProof(key, roleDialer, d, l), "deterministic")
	require.NotEqual(t, p, cableProof(key, roleListener, d, l), "reflected")
	require.NotEqual(t, p, cableProof(key, roleDialer, l, d), "hellos swapped")
	require.NotEqual(t, p, cableProof(key, roleDialer, d, other), "another listener nonce")
	require.NotEqual(t, p, cableProof([]byte("0123456789abcdeF"), roleDialer, d, l), "another key")
	// Pinned vector, computed apart from this code (Python's hmac over
	// the label, "D" and both hellos): changing the label, the order or
	// the MAC breaks peers of the same version; bump CableVersion instead.
	require.Equal(t, "8872043b4a684ea9396b642fd74cf9e041be66a39dbd7d9696593623dcf1c31a", hex.EncodeToString(p))
}

// TestHelloTag: the tag covers the hello up to the nonce and its
// sender's role. Pinned like the proof.
func TestHelloTag(t *testing.T) {
	key := []byte("0123456789abcdef")
	h := cableHello{Flags: helloFlagKey, UID: 1, Nonce: [32]byte{1}}
	tag := helloTag(key, roleDialer, h.payload())
	require.Equal(t, "82689c5609a6df8bc228fce0a6536b5a53b10a1932e51aa1e83a9a141f0ac5ba", hex.EncodeToString(tag[:]))
	require.NotEqual(t, tag, helloTag(key, roleListener, h.payload()))
	h.Tag = tag
	require.Equal(t, tag, helloTag(key, roleDialer, h.payload()), "the tag field itself is not covered")
	h.Nonce[31] = 1
	require.NotEqual(t, tag, helloTag(key, roleDialer, h.payload()))
}

// TestNonceSetForgets: a nonce is new once; the set holds the last
// maxSeenNonces only.
func TestNonceSetForgets(t *testing.T) {
	var s nonceSet
	nonce := func(i int) (n [cableNonceSize]byte) {
		n[0], n[1] = byte(i), byte(i>>8)
		return n
	}
	require.True(t, s.add(nonce(0)))
	require.False(t, s.add(nonce(0)))
	for i := 1; i <= maxSeenNonces; i++ {
		require.True(t, s.add(nonce(i)))
	}
	require.Len(t, s.seen, maxSeenNonces)
	require.True(t, s.add(nonce(0)), "forgotten after maxSeenNonces newer ones")
	require.False(t, s.add(nonce(maxSeenNonces)))
}

// TestHelloRoundTrip: the hello's fields survive encoding, and the
// encoded size is the documented one.
func TestHelloRoundTrip(t *testing.T) {
	in := cableHello{Flags: helloFlagKey, UID: 0x0102030405060708, Nonce: [32]byte{0: 9, 31: 10}, Tag: [32]byte{5: 1}}
	p := in.payload()
	require.Len(t, p, 80)
	require.NoError(t, checkHello(p))
	require.Equal(t, in, decodeHello(p))
	require.True(t, bytes.HasPrefix(p, []byte("TBSC\x00\x02\x00\x01")))
	in.Flags = 0
	require.ErrorIs(t, checkHello(in.payload()), ErrMalformed, "a tag without the key flag")
}

// TestRefusalLogRateLimit: one line at once, then at most one summary
// per interval with the count of the refusals left out; a quiet interval
// lets the next refusal through at once. Times are made up: no clock.
func TestRefusalLogRateLimit(t *testing.T) {
	var r refusalLog
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	errA, errB := errors.New("a"), errors.New("b")

	logNow, schedule, _ := r.admit(at(0), errA)
	require.True(t, logNow)
	require.False(t, schedule)

	logNow, schedule, in := r.admit(at(100*time.Millisecond), errA)
	require.False(t, logNow)
	require.True(t, schedule)
	require.Equal(t, 900*time.Millisecond, in)
	for i := range 198 {
		logNow, schedule, _ = r.admit(at(time.Duration(101+i)*time.Millisecond), errB)
		require.False(t, logNow)
		require.False(t, schedule, "one summary at a time")
	}
	n, last := r.summary(at(time.Second))
	require.Equal(t, 199, n)
	require.Equal(t, errB, last)

	// Within an interval of the summary line: suppressed again.
	logNow, schedule, in = r.admit(at(1500*time.Millisecond), errA)
	require.False(t, logNow)
	require.True(t, schedule)
	require.Equal(t, 500*time.Millisecond, in)
	n, _ = r.summary(at(2 * time.Second))
	require.Equal(t, 1, n)

	// A summary with nothing to say records no line.
	n, _ = r.summary(at(2500 * time.Millisecond))
	require.Zero(t, n)

	logNow, _, _ = r.admit(at(3*time.Second+time.Millisecond), errA)
	require.True(t, logNow, "a quiet interval later, logged at once")
}
