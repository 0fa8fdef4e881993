//go:build e2e

// Package twohosts tests tbstreamd as it is installed on a machine: the
// systemd unit cmd/tbstreamd/systemd/tbstreamd@.service with its example
// configuration, run by a stand-in for the service manager where PID 1 is
// not systemd (test/suites.d/service.sh runs the real one where it is).
// The two machines over TCP are test/suites.d/tcp.sh.
//
// Run with: go test -tags e2e ./test/twohosts (as root).
package twohosts

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	unitFile    = "../../cmd/tbstreamd/systemd/tbstreamd@.service"
	exampleConf = "../../cmd/tbstreamd/systemd/tbstream.conf.example"
)

// unit is the [Service] section of a unit file: each key's values in order
// (a key may repeat).
type unit map[string][]string

// one returns key's single value.
func (u unit) one(t *testing.T, key string) string {
	t.Helper()
	require.Len(t, u[key], 1, "%s= in %s", key, unitFile)
	return u[key][0]
}

// readUnit parses the key=value lines of the unit's [Service] section.
func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			require.True(t, ok, "%s: %q is no key=value", path, line)
			u[k] = append(u[k], v)
		}
	}
	require.NoError(t, sc.Err())
	return u
}

// readEnvFile parses an EnvironmentFile's VAR=VALUE lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "%s: %q is no VAR=VALUE", path, line)
		env[k] = v
	}
	return env
}

// mountsUnder lists the mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestUnitUnderServiceManager does what systemd does with the unit and an
// instance configured from the example: it makes the runtime directory
// (parents 0755, the leaf RuntimeDirectoryMode), reads the environment
// file, expands ExecStart (%i; $VAR split at white space), starts it with
// NOTIFY_SOCKET and JOURNAL_STREAM, and counts it started only at READY=1. Then the host must
// serve (status socket, configfs); at KillSignal it must say STOPPING=1 and
// exit, with status 0 and nothing mounted, within TimeoutStopSec, after
// which systemd would kill it. Paths below /run, /etc and the binary's are
// moved into a temporary root.
func TestUnitUnderServiceManager(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon mounts FUSE file systems")
	}
	u := readUnit(t, unitFile)
	require.Equal(t, "notify", u.one(t, "Type"))
	require.Equal(t, "mixed", u.one(t, "KillMode"))
	require.Equal(t, "SIGTERM", u.one(t, "KillSignal"))
	stopWithin, err := time.ParseDuration(u.one(t, "TimeoutStopSec"))
	require.NoError(t, err, "TimeoutStopSec in Go's duration syntax (30s)")

	root := t.TempDir()
	bin := filepath.Join(root, "tbstreamd")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/tbstreamd").CombinedOutput()
	require.NoError(t, err, "build tbstreamd: %s", out)
	instance := fmt.Sprintf("svc%d", os.Getpid())
	moved := strings.NewReplacer("%i", instance, "/usr/local/bin/tbstreamd", bin,
		"/run/", root+"/run/", "/etc/", root+"/etc/")

	// RuntimeDirectory=: below /run, parents 0755, the last one the mode.
	mode, err := strconv.ParseUint(u.one(t, "RuntimeDirectoryMode"), 8, 32)
	require.NoError(t, err)
	rel := moved.Replace(u.one(t, "RuntimeDirectory"))
	run := filepath.Join(root, "run", rel)
	require.NoError(t, os.MkdirAll(filepath.Dir(run), 0o755))
	require.NoError(t, os.Mkdir(run, os.FileMode(mode)))
	require.NoError(t, os.Chmod(run, os.FileMode(mode)), "no umask, as systemd")

	// The example's listening host, on loopback with any port, its key
	// made as the example says.
	conf := readEnvFile(t, exampleConf)
	opts, ok := conf["TBSTREAMD_OPTS"]
	require.True(t, ok, "%s sets TBSTREAMD_OPTS", exampleConf)
	opts = strings.Replace(opts, "192.0.2.1:7420", "127.0.0.1:0", 1)
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc", "tbstream"), 0o755))
	key := make([]byte, 32)
	f, err := os.Open("/dev/urandom")
	require.NoError(t, err)
	_, err = f.Read(key)
	f.Close()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc", "tbstream", "cable.key"), []byte(fmt.Sprintf("%x\n", key)), 0o600))
	envFile := moved.Replace(u.one(t, "EnvironmentFile"))
	require.NoError(t, os.WriteFile(envFile, []byte("TBSTREAMD_OPTS="+opts+"\n"), 0o644))
	env := readEnvFile(t, envFile)

	var argv []string
	for _, w := range strings.Fields(u.one(t, "ExecStart")) {
		if name, ok := strings.CutPrefix(w, "$"); ok {
			argv = append(argv, strings.Fields(moved.Replace(env[name]))...)
			continue
		}
		argv = append(argv, moved.Replace(w))
	}
	require.Equal(t, bin, argv[0], "ExecStart runs /usr/local/bin/tbstreamd")
	require.Contains(t, argv, run, "ExecStart's -run-dir is the RuntimeDirectory")

	sock := filepath.Join(root, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	defer ln.Close()
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()

	logPath := filepath.Join(root, "log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	defer logf.Close()
	// StandardError=journal: systemd names the stream in JOURNAL_STREAM,
	// and the journal stamps each line, so the daemon leaves out time=.
	fi, err := logf.Stat()
	require.NoError(t, err)
	stream := fi.Sys().(*syscall.Stat_t)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, fmt.Sprintf("JOURNAL_STREAM=%d:%d", stream.Dev, stream.Ino))
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	log := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()

	select {
	case m := <-msgs:
		require.True(t, strings.HasPrefix(m, "READY=1\n"), "first notification %q\n%s", m, log())
	case err := <-exited:
		t.Fatalf("tbstreamd exited before READY=1: %v\n%s", err, log())
	}
	// Started: the host serves.
	c, err := net.Dial("unix", filepath.Join(run, "status.sock"))
	require.NoError(t, err, log())
	_, err = c.Write([]byte("status\n"))
	require.NoError(t, err)
	var st struct{ Name, Devices string }
	require.NoError(t, json.NewDecoder(c).Decode(&st))
	c.Close()
	require.Equal(t, instance, st.Name, "-name %i")
	_, err = os.Stat(filepath.Join(run, "config", "thunderbolt", "stream"))
	require.NoError(t, err, "configfs mounted")
	require.NotEmpty(t, mountsUnder(t, run))

	// systemctl stop: KillSignal to the main process.
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case m := <-msgs:
		require.True(t, strings.HasPrefix(m, "STOPPING=1\n"), "notification at stop %q\n%s", m, log())
	case err := <-exited:
		t.Fatalf("tbstreamd exited without STOPPING=1: %v\n%s", err, log())
	}
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status 0 (Restart=on-failure restarts nothing)\n%s", log())
	case <-time.After(stopWithin):
		t.Fatalf("tbstreamd did not exit within TimeoutStopSec=%v of SIGTERM (systemd would SIGKILL it and leave its mounts)\n%s", stopWithin, log())
	}
	require.Empty(t, mountsUnder(t, run), "nothing mounted in the run directory after the stop")
	require.NoError(t, os.RemoveAll(run), "systemd removes the RuntimeDirectory at stop")
	require.NotContains(t, log(), "level=ERROR", "no error logged")
	require.Contains(t, log(), "level=INFO msg=\"tbstreamd ready\"")
	require.NotContains(t, log(), "time=", "the journal stamps the lines itself")
}
