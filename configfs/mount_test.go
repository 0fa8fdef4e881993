package configfs

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// mounted is a pseudo-configfs on a real FUSE mount, for shell commands to run against.
type mounted struct {
	t       *testing.T
	dir     string // the mount point, the configfs root
	stream  string // dir/thunderbolt/stream
	backend *MemBackend
	server  *Server
	logs    *lockedBuffer // what the mount logged
}

// lockedBuffer collects log output written by the FUSE server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mountForTest mounts a fresh tree over backend (a new MemBackend when nil) and unmounts
// it when the test ends. It skips, saying why, where FUSE mounts are impossible.
func mountForTest(t *testing.T, backend Backend) *mounted {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE with mount(2) needs root (CAP_SYS_ADMIN); run as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is needed to check the shell's error messages")
	}
	m := &mounted{t: t, logs: &lockedBuffer{}}
	if backend == nil {
		m.backend = NewMemBackend()
		backend = m.backend
	}
	// A directory others can reach, so the tests as "nobody" get to the mount.
	m.dir = t.TempDir()
	for d := m.dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	logger := slog.New(slog.NewTextHandler(m.logs, nil))
	server, err := Mount(context.Background(), m.dir, backend, Options{Logger: logger})
	require.NoError(t, err)
	m.server = server
	m.stream = filepath.Join(m.dir, "thunderbolt", "stream")
	t.Cleanup(func() { require.NoError(t, server.Unmount()) })
	return m
}

// sh runs a bash script in stream/ as root and returns its stdout, stderr and exit code.
func (m *mounted) sh(script string) (stdout, stderr string, code int) {
	m.t.Helper()
	return m.shAs(nil, script)
}

// shAs runs the script through prefix (e.g. setpriv to drop root), nil for none.
func (m *mounted) shAs(prefix []string, script string) (stdout, stderr string, code int) {
	m.t.Helper()
	// The shell changes into stream/ itself: a child changing directory into the mount
	// between vfork and exec would wait for this very process to answer FUSE, and hang.
	args := append(append([]string{}, prefix...), "bash", "-c", `cd "$0" || exit 99; `+script, m.stream)
	cmd := exec.Command(args[0], args[1:]...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		var exitErr *exec.ExitError
		require.ErrorAs(m.t, err, &exitErr, "run %q", script)
		code = exitErr.ExitCode()
	}
	return out.String(), errOut.String(), code
}

// ok runs a script that must succeed and returns its output.
func (m *mounted) ok(script string) string {
	m.t.Helper()
	stdout, stderr, code := m.sh(script)
	require.Zero(m.t, code, "%q failed: %s", script, stderr)
	require.Empty(m.t, stderr, "%q", script)
	return stdout
}

// fails runs a script that must fail with the given strerror text on stderr.
func (m *mounted) fails(script, message string) {
	m.t.Helper()
	_, stderr, code := m.sh(script)
	require.NotZero(m.t, code, "%q succeeded", script)
	require.Contains(m.t, stderr, message, "%q", script)
}

func TestDocumentedWorkflow(t *testing.T) {
	m := mountForTest(t, nil)
	m.ok(`mkdir 0-1.0 && mkdir 0-1.0/backup && echo -1 > 0-1.0/backup/in_hopid && echo -1 > 0-1.0/backup/out_hopid`)
	require.Equal(t, "-1\n-1\n0\n", m.ok(`cd 0-1.0/backup && cat in_hopid out_hopid index`))
	require.Equal(t, map[string][]string{"0-1.0": {"backup"}}, m.backend.Groups())
	for _, a := range []Attr{AttrInHopID, AttrOutHopID} {
		v, ok := m.backend.Value("0-1.0", "backup", a)
		require.True(t, ok)
		require.EqualValues(t, -1, v, "%s reached the backend", a)
	}
	_, ok := m.backend.Value("0-1.0", "camera", AttrInHopID)
	require.False(t, ok)
	m.ok(`rmdir -p 0-1.0/backup`)
	require.Empty(t, m.backend.Groups())
	require.Empty(t, strings.TrimSpace(m.ok(`ls -A`)))
}

// TestKernelPathsVerbatim binds the mount over /sys/kernel/config in a private mount
// namespace, as `tbstream shell` does, and runs the kernel documentation's commands
// character for character.
func TestKernelPathsVerbatim(t *testing.T) {
	m := mountForTest(t, nil)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is needed for a private mount namespace")
	}
	// /sys/kernel/config exists only with configfs; a tmpfs over /sys/kernel, private to
	// the namespace, provides the mount point.
	setup := `mount -t tmpfs tbstream-test /sys/kernel && mkdir /sys/kernel/config && mount --bind "$0" /sys/kernel/config`
	documented := `
mkdir /sys/kernel/config/thunderbolt/stream/0-1.0
mkdir /sys/kernel/config/thunderbolt/stream/0-1.0/backup
echo -1 > /sys/kernel/config/thunderbolt/stream/0-1.0/backup/in_hopid
echo -1 > /sys/kernel/config/thunderbolt/stream/0-1.0/backup/out_hopid
mkdir /sys/kernel/config/thunderbolt/stream/0-503.0
mkdir /sys/kernel/config/thunderbolt/stream/0-503.0/backup
cat /sys/kernel/config/thunderbolt/stream/0-1.0/backup/in_hopid /sys/kernel/config/thunderbolt/stream/0-503.0/backup/index
cd /sys/kernel/config/thunderbolt/stream/ && rmdir -p 0-503.0/backup
ls /sys/kernel/config/thunderbolt/stream/`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "bash", "-e", "-c", setup+"\n"+documented, m.dir)
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "unshare failed") {
		t.Skipf("no private mount namespace here: %s", out)
	}
	require.NoError(t, err, "%s", out)
	require.Equal(t, "-1\n1\n0-1.0\n", string(out))
	require.Equal(t, map[string][]string{"0-1.0": {"backup"}}, m.backend.Groups())
}
