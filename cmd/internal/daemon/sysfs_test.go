package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSysfsViewAndDeviceLinks starts a daemon without a peer: its sysfs
// view shows the domain and host router only, the module's refcnt and the
// shells' /dev link follow mkdir and rmdir, and Stop unmounts both.
func TestSysfsViewAndDeviceLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE file systems and a tmpfs")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	run := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := Start(context.Background(), Options{Name: "h", RunDir: run, Devices: "fuse", Logger: quiet})
	require.NoError(t, err)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			d.Stop()
		}
	})
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(SysDir(run), p))
		require.NoError(t, err)
		return string(b)
	}
	entries, err := os.ReadDir(filepath.Join(SysDir(run), "bus/thunderbolt/devices"))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Equal(t, []string{"0-0", "domain0"}, names, "no peer: no XDomain")
	require.Equal(t, "h\n", read("bus/thunderbolt/devices/0-0/device_name"))
	require.Equal(t, "0x8086\n", read("bus/thunderbolt/devices/0-0/vendor"))
	require.Equal(t, "0\n", read("module/thunderbolt_stream/refcnt"))

	links := DevLinksDir(run)
	target, err := os.Readlink(filepath.Join(links, "null"))
	require.NoError(t, err)
	require.Equal(t, filepath.Join(RealDevDir(run), "null"), target, "every /dev entry is linked")
	_, err = os.Lstat(filepath.Join(links, "tbstream0"))
	require.ErrorIs(t, err, os.ErrNotExist)

	stream := filepath.Join(ConfigDir(run), "thunderbolt", "stream")
	require.NoError(t, os.MkdirAll(filepath.Join(stream, "0-1.0", "s"), 0o755))
	target, err = os.Readlink(filepath.Join(links, "tbstream0"))
	require.NoError(t, err, "the link appears at mkdir")
	require.Equal(t, filepath.Join(DevDir(run), "tbstream0"), target)
	require.Equal(t, "2\n", read("module/thunderbolt_stream/refcnt"), "a group and a stream pin the module")
	st, err := ReadStatus(run)
	require.NoError(t, err)
	require.Equal(t, "2", st.Sysfs["module/thunderbolt_stream"]["refcnt"])

	require.NoError(t, os.Remove(filepath.Join(stream, "0-1.0", "s")))
	_, err = os.Lstat(filepath.Join(links, "tbstream0"))
	require.ErrorIs(t, err, os.ErrNotExist, "and goes at rmdir")
	require.NoError(t, os.Remove(filepath.Join(stream, "0-1.0")))

	d.Stop()
	stopped = true
	require.False(t, mounted(t, SysDir(run)), "sysfs view unmounted")
	require.False(t, mounted(t, links), "device links unmounted")
}
