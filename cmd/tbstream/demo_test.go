package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeAptGet puts on PATH only an apt-get that runs script (with $DIR,
// PATH's only directory), so that gst-launch-1.0 is missing; it returns
// the file apt-get logs its arguments to.
func fakeAptGet(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	body := "#!/bin/sh\nDIR=" + dir + "\necho \"$*\" >> " + calls + "\n" + script + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "apt-get"), []byte(body), 0o755))
	t.Setenv("PATH", dir)
	return calls
}

// The demo installs GStreamer itself, and when it cannot, says the exact
// command.
func TestNeedGStreamerInstalls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the install path runs as root (the demo itself needs root)")
	}
	// This apt-get "installs" by creating gst-launch-1.0 next to itself.
	calls := fakeAptGet(t, `[ "$1" = install ] && /bin/cp "$0" "$DIR/gst-launch-1.0"; exit 0`)
	require.NoError(t, needGStreamer(context.Background()))
	b, err := os.ReadFile(calls)
	require.NoError(t, err)
	require.Equal(t, "update -q\ninstall -y -q --no-install-recommends gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good\n", string(b))
}

func TestNeedGStreamerSaysTheCommand(t *testing.T) {
	fakeAptGet(t, `[ "$1" = install ] && { echo "E: Unable to locate package gstreamer1.0-tools"; exit 100; }; exit 0`)
	err := needGStreamer(context.Background())
	require.Error(t, err)
	require.Contains(t, err.Error(), "apt-get install -y -q --no-install-recommends gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good")
	if os.Geteuid() == 0 {
		require.Contains(t, err.Error(), "E: Unable to locate package gstreamer1.0-tools")
	}
}
