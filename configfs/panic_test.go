package configfs

import (
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBackendPanics: through a real mount, a backend call that panics fails the user's
// syscall with EIO, logs one error line with the stack, is counted, and the same syscall
// then works. The tree's locks are not left held: the second attempt needs them.
func TestBackendPanics(t *testing.T) {
	tests := []struct {
		kind  OpKind
		setup string                         // shell commands before the fault is armed
		try   func(m *mounted) error         // the syscall that hits the backend
		check func(t *testing.T, m *mounted) // after the second, successful try
	}{
		{OpMakeGroup, "", func(m *mounted) error { return os.Mkdir(m.path("0-1.0"), 0o755) }, func(t *testing.T, m *mounted) {
			require.DirExists(t, m.path("0-1.0"))
		}},
		{OpMakeItem, "mkdir 0-1.0", func(m *mounted) error { return os.Mkdir(m.path("0-1.0/backup"), 0o755) }, func(t *testing.T, m *mounted) {
			require.Equal(t, "0\n", m.ok("cat 0-1.0/backup/index"))
		}},
		{OpStore, "mkdir -p 0-1.0/backup", func(m *mounted) error {
			return os.WriteFile(m.path("0-1.0/backup/in_hopid"), []byte("9\n"), 0)
		}, func(t *testing.T, m *mounted) {
			require.Equal(t, "9\n", m.ok("cat 0-1.0/backup/in_hopid"))
		}},
		{OpShow, "mkdir -p 0-1.0/backup", func(m *mounted) error {
			_, err := os.ReadFile(m.path("0-1.0/backup/ring_size"))
			return err
		}, func(t *testing.T, m *mounted) {
			require.Equal(t, "256\n", m.ok("cat 0-1.0/backup/ring_size"))
		}},
		{OpRemoveItem, "mkdir -p 0-1.0/backup", func(m *mounted) error { return os.Remove(m.path("0-1.0/backup")) }, func(t *testing.T, m *mounted) {
			require.NoDirExists(t, m.path("0-1.0/backup"))
		}},
		{OpRemoveGroup, "mkdir 0-1.0", func(m *mounted) error { return os.Remove(m.path("0-1.0")) }, func(t *testing.T, m *mounted) {
			require.NoDirExists(t, m.path("0-1.0"))
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			m := mountForTest(t, nil)
			if tt.setup != "" {
				m.ok(tt.setup)
			}
			var once sync.Once
			m.backend.InjectFault(func(op Op) error {
				if op.Kind == tt.kind {
					once.Do(func() { panic("injected panic in " + string(op.Kind)) })
				}
				return nil
			})
			require.ErrorIs(t, tt.try(m), syscall.EIO)
			require.NoError(t, tt.try(m), "the same syscall works once the backend behaves")
			tt.check(t, m)
			require.EqualValues(t, 1, m.server.Panics())
			var lines []string
			for _, l := range strings.Split(m.logs.String(), "\n") {
				if strings.Contains(l, "panic in configfs backend") {
					lines = append(lines, l)
				}
			}
			require.Len(t, lines, 1, "one log line per panic:\n%s", m.logs)
			require.Contains(t, lines[0], "level=ERROR")
			require.Contains(t, lines[0], "injected panic in "+string(tt.kind))
			require.Contains(t, lines[0], "(*MemBackend).check", "the stack reaches the panicking call")
		})
	}
}
