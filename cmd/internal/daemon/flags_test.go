package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu"
)

// TestFlagsCableKey: -cable-key loads the key into Options; a key file
// others may read, or a TCP listener beyond loopback without a key, stops
// the daemon before it starts, with one clear error.
func TestFlagsCableKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	require.NoError(t, os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600))
	loose := filepath.Join(dir, "loose")
	require.NoError(t, os.WriteFile(loose, []byte("0123456789abcdef0123456789abcdef\n"), 0o600))
	require.NoError(t, os.Chmod(loose, 0o644))
	args := func(extra ...string) []string { return append([]string{"-run-dir", dir}, extra...) }

	o, err := ParseFlags("tbstreamd", args("-cable-key", key, "-listen", "tcp:0.0.0.0:7000"))
	require.NoError(t, err)
	require.Equal(t, "0123456789abcdef0123456789abcdef", string(o.CableKey))

	_, err = ParseFlags("tbstreamd", args("-cable-key", loose))
	require.ErrorContains(t, err, "-cable-key")
	require.ErrorContains(t, err, "mode 0644")

	for _, listen := range []string{"tcp:0.0.0.0:7000", "tcp:[::]:7000", "tcp:192.0.2.1:7000"} {
		_, err = ParseFlags("tbstreamd", args("-listen", listen))
		require.ErrorIs(t, err, emu.ErrNeedKey, listen)
		require.ErrorContains(t, err, "-cable-key", listen)

		_, err = Start(context.Background(), Options{RunDir: t.TempDir(), Listen: listen})
		require.ErrorIs(t, err, emu.ErrNeedKey, "Start refuses as the flags do: %s", listen)
	}
	for _, listen := range []string{"tcp:127.0.0.1:7000", "tcp::7000", "tcp:localhost:7000", "unix:cable.sock"} {
		o, err = ParseFlags("tbstreamd", args("-listen", listen))
		require.NoError(t, err, listen)
		require.Nil(t, o.CableKey)
	}
}
