package fusefile_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/cuse/fusefile"
	"tbstream/cuse/loopback"
)

// TestDirAddRemove: files come and go on a mounted Dir as /dev nodes do;
// a handle opened before a removal keeps working.
func TestDirAddRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts with mount(2) (DirectMountStrict)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (CONFIG_FUSE_FS)")
	}
	mnt := t.TempDir()
	d, err := fusefile.MountDir(mnt, fusefile.Options{})
	require.NoError(t, err)
	t.Cleanup(func() {
		if d.Unmount() != nil {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	path := filepath.Join(mnt, "tbstream0")
	require.NoFileExists(t, path)

	require.NoError(t, d.Add("tbstream0", fusefile.File{Device: loopback.New(0), Mode: 0o660}))
	require.ErrorIs(t, d.Add("tbstream0", fusefile.File{Device: loopback.New(0)}), syscall.EEXIST)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o660), fi.Mode())

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	d.Remove("tbstream0")
	_, err = os.OpenFile(path, os.O_RDWR, 0)
	require.ErrorIs(t, err, os.ErrNotExist, "new opens fail after Remove")

	_, err = f.Write([]byte("still here"))
	require.NoError(t, err, "an open handle outlives the removal")
	buf := make([]byte, 32)
	n, err := f.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "still here", string(buf[:n]))
}
