package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// listenNotify is a service manager's notification socket at addr (a path
// or "@name"); its datagrams arrive on the returned channel, which is
// closed when the socket is.
func listenNotify(t *testing.T, addr string) <-chan string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	msgs := make(chan string, 16)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return msgs
}

func TestNotifierSendsToPathAndAbstractSockets(t *testing.T) {
	var name [8]byte
	rand.Read(name[:])
	for kind, addr := range map[string]string{
		"path":     filepath.Join(t.TempDir(), "notify"),
		"abstract": "@tbstream-notify-test-" + hex.EncodeToString(name[:]),
	} {
		t.Run(kind, func(t *testing.T) {
			msgs := listenNotify(t, addr)
			t.Setenv(NotifySocketEnv, addr)
			n := notifierFromEnv()
			_, set := os.LookupEnv(NotifySocketEnv)
			require.False(t, set, "NOTIFY_SOCKET is removed for the daemon's children")
			require.True(t, n.enabled())
			require.NoError(t, n.send("READY=1", statusLine("serving\nthere")))
			require.Equal(t, "READY=1\nSTATUS=serving there\n", <-msgs)
			require.NoError(t, n.send("STOPPING=1"))
			require.Equal(t, "STOPPING=1\n", <-msgs)
		})
	}
}

func TestNotifierWithoutServiceManager(t *testing.T) {
	t.Setenv(NotifySocketEnv, "")
	os.Unsetenv(NotifySocketEnv)
	n := notifierFromEnv()
	require.False(t, n.enabled())
	require.NoError(t, n.send("READY=1"), "no service manager: nothing to tell")
}

func TestNotifierRefusesOtherAddresses(t *testing.T) {
	for _, addr := range []string{"vsock:2:1234", "relative/notify"} {
		err := notifier{addr: addr}.send("READY=1")
		require.ErrorContains(t, err, "want an absolute path or @name", addr)
	}
	// A socket that nobody listens on is an error the daemon logs.
	err := notifier{addr: filepath.Join(t.TempDir(), "none")}.send("READY=1")
	require.Error(t, err)
}

// TestRunNotifiesReadyAndStopping runs a daemon as systemd runs a
// Type=notify service: READY=1 must come only once the host serves (its
// status socket answers, configfs and the devices are mounted), and
// STOPPING=1 when it begins to stop, before Run returns.
func TestRunNotifiesReadyAndStopping(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	run := filepath.Join(t.TempDir(), "run")
	sock := filepath.Join(t.TempDir(), "notify")
	msgs := listenNotify(t, sock)
	t.Setenv(NotifySocketEnv, sock)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Name: "h", RunDir: run, Devices: "fuse", Logger: quiet}) }()

	var ready string
	select {
	case ready = <-msgs:
	case err := <-done:
		t.Fatalf("Run returned before READY=1: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(ready, "\n"), "\n")
	require.Equal(t, "READY=1", lines[0], "message: %q", ready)
	require.Contains(t, lines, "STATUS=serving "+run+" (devices: fuse)")
	_, set := os.LookupEnv(NotifySocketEnv)
	require.False(t, set, "NOTIFY_SOCKET is removed for the daemon's children")
	st, err := ReadStatus(run)
	require.NoError(t, err, "the status socket answers at READY=1")
	require.Equal(t, "h", st.Name)
	require.True(t, mounted(t, ConfigDir(run)), "configfs mounted at READY=1")
	require.True(t, mounted(t, DevDir(run)), "devices mounted at READY=1")

	cancel()
	stopping := <-msgs
	require.True(t, strings.HasPrefix(stopping, "STOPPING=1\n"), "message: %q", stopping)
	require.NoError(t, <-done)
	require.False(t, mounted(t, ConfigDir(run)), "configfs unmounted when Run returns")
	require.False(t, mounted(t, DevDir(run)), "devices unmounted when Run returns")
	select {
	case m, ok := <-msgs:
		require.False(t, ok, "no message after STOPPING=1: %q", m)
	default:
	}
}

func TestToJournalComparesTheStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	value := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	require.True(t, toJournal(value, f), "JOURNAL_STREAM %s names f", value)
	require.False(t, toJournal(fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), f), "another inode")
	for _, bad := range []string{"", "12", "a:b", "1:2:3"} {
		require.False(t, toJournal(bad, f), "%q", bad)
	}
}

func TestUntimedHandlerLeavesOutTheTime(t *testing.T) {
	var timed, untimed strings.Builder
	slog.New(slog.NewTextHandler(&timed, nil)).With("host", "h").Info("ready", "run", "r")
	slog.New(untimedHandler{slog.NewTextHandler(&untimed, nil)}).With("host", "h").WithGroup("g").Info("ready", "run", "r")
	require.Contains(t, timed.String(), "time=")
	require.Equal(t, "level=INFO msg=ready host=h g.run=r\n", untimed.String())
}
