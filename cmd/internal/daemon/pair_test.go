package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunPair: two hosts in one process find each other over the
// in-process cable, an unplug is followed by a new cable, and the end of
// ctx stops both, their run directories released.
func TestRunPair(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	run1, run2 := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunPair(ctx,
			Options{Name: "host1", RunDir: run1, Devices: "fuse", Logger: quiet, Adapter: 3, PeerRoute: 0x503},
			Options{Name: "host2", RunDir: run2, Devices: "fuse", Logger: quiet, Adapter: 1, PeerRoute: 1})
	}()
	defer func() {
		cancel()
		<-done
	}()
	peerOf := func(run string) string {
		st, err := ReadStatus(run)
		if err != nil || len(st.Peers) == 0 || len(st.Peers[0].Services) == 0 {
			return ""
		}
		return st.Peers[0].DeviceName
	}
	// Hang guards, not speed assertions.
	require.Eventually(t, func() bool { return peerOf(run1) == "host2" && peerOf(run2) == "host1" },
		60*time.Second, 20*time.Millisecond, "the hosts never found each other")

	require.NoError(t, Unplug(run2))
	require.Eventually(t, func() bool { return peerOf(run1) == "" }, 60*time.Second, 10*time.Millisecond,
		"host1 kept its peer after host2's cable was pulled")
	require.Eventually(t, func() bool { return peerOf(run1) == "host2" && peerOf(run2) == "host1" },
		60*time.Second, 20*time.Millisecond, "no new cable after the unplug")

	cancel()
	require.NoError(t, <-done)
	done <- nil
	for _, run := range []string{run1, run2} {
		pid, err := Owner(run)
		require.NoError(t, err)
		assert.Zero(t, pid, "%s still locked", run)
	}
}

// A pair's hosts have only their in-process cable.
func TestRunPairRefusesOtherCables(t *testing.T) {
	err := RunPair(context.Background(), Options{Name: "host1", Listen: "unix:/x"}, Options{Name: "host2"})
	require.ErrorContains(t, err, "in-process cable")
}
