package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"tbstream/cmd/internal/daemon"
)

func TestPlanUpSocket(t *testing.T) {
	run := t.TempDir()
	sock := "unix:" + filepath.Join(run, "cable.sock")
	p, err := planUp(run, cableShm, false)
	require.NoError(t, err)
	assert.Equal(t, []string{"-adapter", "1", "-peer-route", "1", "-listen", sock}, p.args["host2"])
	assert.Equal(t, []string{"-adapter", "3", "-peer-route", "503", "-connect", sock}, p.args["host1"])
	assert.Equal(t, pairDeadline, p.deadline)

	p, err = planUp(run, cableSocket, false)
	require.NoError(t, err)
	assert.Equal(t, []string{"-adapter", "1", "-peer-route", "1", "-listen", sock, "-cable-shm=false"}, p.args["host2"])
	assert.Equal(t, []string{"-adapter", "3", "-peer-route", "503", "-connect", sock, "-cable-shm=false"}, p.args["host1"])
}

func TestPlanUpUSB(t *testing.T) {
	run := t.TempDir()
	p, err := planUp(run, "usb:dummy_udc.0", true)
	require.NoError(t, err)
	assert.Equal(t, []string{"-adapter", "3", "-peer-route", "503", "-cable", "usb-gadget:dummy_udc.0"}, p.args["host1"])
	assert.Equal(t, []string{"-adapter", "1", "-peer-route", "1", "-cable", "usb"}, p.args["host2"])
	assert.Equal(t, pairDeadlineUSB, p.deadline)

	p, err = planUp(run, "usb", true)
	require.NoError(t, err)
	assert.Equal(t, []string{"-adapter", "3", "-peer-route", "503", "-cable", "usb-gadget"}, p.args["host1"], "no UDC: the gadget takes the only one")

	// Each host's full command line is one the daemon accepts, and the
	// gadget side needs no -tags usb.
	o, err := daemon.ParseFlags("test", daemonArgs(run, "host1", p.args["host1"])[1:])
	require.NoError(t, err)
	require.NotNil(t, o.Cable)
	assert.True(t, o.Cable.Gadget)
	assert.Equal(t, "host1", o.Name)
	assert.Equal(t, filepath.Join(run, "host1"), o.RunDir)
	assert.Equal(t, "host1/", o.DevicePrefix)
	if daemon.USBHostBuilt {
		o, err = daemon.ParseFlags("test", daemonArgs(run, "host2", p.args["host2"])[1:])
		require.NoError(t, err)
		require.NotNil(t, o.Cable)
		assert.False(t, o.Cable.Gadget)
	}
}

func TestPlanUpUSBRefusedWithoutTag(t *testing.T) {
	for _, c := range []string{"usb", "usb:dummy_udc.0"} {
		_, err := planUp(t.TempDir(), c, false)
		require.ErrorIs(t, err, errNoUSBHostUp, c)
		assert.Contains(t, err.Error(), "CGO_ENABLED=1 go build -tags usb ./cmd/tbstream")
	}
}

func TestUpRefusesUSBWithoutTag(t *testing.T) {
	if daemon.USBHostBuilt {
		t.Skip("this test binary has the USB host side (-tags usb): nothing to refuse")
	}
	// Before anything else (root, starting daemons): nothing is started.
	run := t.TempDir()
	_, err := up(t.Context(), run, "usb")
	require.ErrorIs(t, err, errNoUSBHostUp)
	assert.NoDirExists(t, filepath.Join(run, "host1"))
}

func TestPlanUpBadCable(t *testing.T) {
	for _, c := range []string{"", "tcp", "shm:x", "usb-gadget"} {
		_, err := planUp(t.TempDir(), c, true)
		assert.Error(t, err, c)
	}
}
