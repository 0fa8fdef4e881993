package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCableKeyPlumbed: a daemon given a key (Options.CableKey, what
// -cable-key loads) hangs up on a stranger without it; two daemons with
// the same key plug in over a unix cable and find each other; the cable's
// socket is mode 0600.
func TestCableKeyPlumbed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	key := []byte("0123456789abcdef0123456789abcdef")
	sock := filepath.Join(t.TempDir(), "cable.sock")
	run1, run2 := t.TempDir(), t.TempDir()
	d2, err := Start(context.Background(), Options{Name: "host2", RunDir: run2, Devices: "fuse", Logger: quiet,
		Listen: "unix:" + sock, CableKey: key})
	require.NoError(t, err)
	defer d2.Stop()

	// A stranger without the key is hung up on (a keyless listener would
	// plug it in and keep it).
	var stranger net.Conn
	require.Eventually(t, func() bool {
		stranger, err = net.Dial("unix", sock)
		return err == nil
	}, 60*time.Second, 10*time.Millisecond, "host2 never listened")
	hello := make([]byte, 8+80)
	copy(hello, []byte{1, 0, 0, 0, 0, 80, 0, 0})
	copy(hello[8:], "TBSC\x00\x02\x00\x00\x00\x00\x00\x00\xfe\xed\xfa\xce")
	_, err = stranger.Write(hello)
	require.NoError(t, err)
	stranger.SetDeadline(time.Now().Add(60 * time.Second))
	_, err = io.Copy(io.Discard, stranger)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET, "the listener hangs up on a stranger")
	}
	stranger.Close()

	d1, err := Start(context.Background(), Options{Name: "host1", RunDir: run1, Devices: "fuse", Logger: quiet,
		Connect: "unix:" + sock, Adapter: 3, CableKey: key})
	require.NoError(t, err)
	defer d1.Stop()

	// A hang guard, not a speed assertion.
	require.Eventually(t, func() bool {
		st, err := ReadStatus(run1)
		return err == nil && len(st.Peers) > 0
	}, 60*time.Second, 20*time.Millisecond, "host1 never found host2")
	fi, err := os.Lstat(sock)
	require.NoError(t, err)
	require.Equal(t, os.ModeSocket, fi.Mode().Type())
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}
