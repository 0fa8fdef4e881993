package emu_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu"
)

// TestMalformedCableFrameUnplugs: a peer that breaks the framing gets its
// cable closed; the host sees an unplug and counts it, nothing panics.
func TestMalformedCableFrameUnplugs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		garbage []byte
	}{
		{"unknown kind", []byte{0x42, 0, 0, 0, 0, 0, 0, 0}},
		{"oversized data", []byte{2, 0x12, 0, 8, 0x20, 0, 0, 0}},
		{"second hello", append([]byte{1, 0, 0, 0, 0, 80, 0, 0}, helloBytes()...)},
		{"auth after the handshake", append([]byte{7, 0, 0, 0, 0, 32, 0, 0}, make([]byte, 32)...)},
		{"credit of zero", []byte{4, 0, 0, 8, 0, 4, 0, 0, 0, 0, 0, 0}},
		{"credit beyond any ring", []byte{4, 0, 0, 8, 0, 4, 0, 0, 0, 0, 0x10, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := newTestHost(t, "victim")
			ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "cable.sock"))
			require.NoError(t, err)
			defer ln.Close()

			peerDone := make(chan error, 1)
			go func() {
				conn, err := net.Dial("unix", ln.Addr().String())
				if err != nil {
					peerDone <- err
					return
				}
				defer conn.Close()
				// The documented hello: kind 1, length 80, "TBSC",
				// version 2, no flags (no key), UID, nonce, zero tag.
				hello := append([]byte{1, 0, 0, 0, 0, 80, 0, 0}, helloBytes()...)
				if _, err := conn.Write(hello); err != nil {
					peerDone <- err
					return
				}
				if _, err := io.ReadFull(conn, make([]byte, len(hello))); err != nil {
					peerDone <- err
					return
				}
				conn.Write(tc.garbage)
				_, err = io.Copy(io.Discard, conn) // until the host hangs up
				peerDone <- err
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := th.emu.Accept(ctx, ln, emu.Port{Adapter: 1})
			require.NoError(t, err)
			waitEvent(t, th, false)
			waitEvent(t, th, true)
			<-c.Done()
			require.NoError(t, <-peerDone)
			require.Equal(t, uint64(1), th.emu.Counters().CableMalformed)
		})
	}
}

// helloBytes is a keyless HELLO payload as the package doc gives it.
func helloBytes() []byte {
	p := make([]byte, 80)
	copy(p, "TBSC")
	binary.BigEndian.PutUint16(p[4:], emu.CableVersion)
	binary.BigEndian.PutUint64(p[8:], 0xfeedface)
	copy(p[16:], "a nonce, random in real life....")
	return p
}
