package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"tbstream/cmd/internal/daemon"
)

// fakeRunRoot is a run root with host directories that a daemon ran in
// (a lock file) but none runs in now.
func fakeRunRoot(t *testing.T, hosts ...string) string {
	t.Helper()
	run := filepath.Join(t.TempDir(), "run")
	for _, h := range hosts {
		require.NoError(t, os.MkdirAll(hostDir(run, h), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(hostDir(run, h), "lock"), nil, 0o600))
	}
	return run
}

// list of hosts whose daemons do not run: each listed as not running,
// with what to do, and exit status 1 with nothing more on standard error;
// HOST arguments (before or after the flags) filter, an unknown one is
// an error.
func TestListNotRunningAndFilters(t *testing.T) {
	run := fakeRunRoot(t, "host1", "host2", "hostA")
	code, out, errOut := runCLI(t, "-run", run, "list")
	assert.Equal(t, 1, code)
	assert.Equal(t, "Host host1: not running: start it with tbstream up\n\n"+
		"Host host2: not running: start it with tbstream up\n\n"+
		"Host hostA: not running: start its tbstreamd\n\n", out)
	assert.Empty(t, errOut)

	for _, args := range [][]string{{"list", "host2"}, {"list", "host2", "-v"}, {"list", "-v", "host2"}} {
		code, out, errOut = runCLI(t, append([]string{"-run", run}, args...)...)
		assert.Equal(t, 1, code, "%v", args)
		assert.Equal(t, "Host host2: not running: start it with tbstream up\n\n", out, "%v", args)
		assert.Empty(t, errOut, "%v", args)
	}

	code, out, errOut = runCLI(t, "-run", run, "list", "-json", "host1")
	assert.Equal(t, 1, code)
	var doc listJSON
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	assert.Equal(t, []hostJSON{{Name: "host1", Error: "not running: start it with tbstream up"}}, doc.Hosts)
	assert.Empty(t, errOut)

	code, out, errOut = runCLI(t, "-run", run, "list", "host1", "host3")
	assert.Equal(t, 1, code)
	assert.Empty(t, out)
	assert.Equal(t, fmt.Sprintf("tbstream: no host \"host3\" under %s (hosts there: host1, host2, hostA)\n", run), errOut)

	code, _, errOut = runCLI(t, "-run", filepath.Join(run, "none"), "list")
	assert.Equal(t, 1, code)
	assert.Equal(t, fmt.Sprintf("tbstream: no hosts under %s (it does not exist): tbstream up starts host1 and host2\n", filepath.Join(run, "none")), errOut)
}

// A command that needs a running host says which is not, and what to do.
func TestNeedHost(t *testing.T) {
	run := fakeRunRoot(t, "host1", "hostA")
	_, err := needHost(run, "host1")
	require.EqualError(t, err, "host1: not running: start it with tbstream up")
	_, err = needHost(run, "hostA")
	require.EqualError(t, err, "hostA: not running: start its tbstreamd")
	_, err = needHost(run, "host9")
	require.EqualError(t, err, fmt.Sprintf("no host \"host9\" under %s (hosts there: host1, hostA)", run))
}

// needFUSEHosts skips a test that runs emulated hosts where it cannot.
func needFUSEHosts(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the hosts mount FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("needs /dev/fuse: %v", err)
	}
}

// asUser runs fn on a thread of its own whose effective user and group
// are uid (setresuid(2) and setresgid(2) act on the calling thread; Go's
// wrappers would change every thread). The thread ends with fn.
func asUser(t *testing.T, uid int, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		keep := ^uintptr(0)    // -1: unchanged
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(uid), keep); e != 0 {
			done <- fmt.Errorf("setresgid: %w", e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
			done <- fmt.Errorf("setresuid: %w", e)
			return
		}
		fn()
		done <- nil
	}()
	require.NoError(t, <-done)
}

// list works for a user other than root, through the status socket
// (the lock that says whether a daemon runs is root's), without the
// daemon's open-file count; unplug and stacks are root's alone, and the
// daemon refuses them to anyone else whatever the client does.
func TestListAsAnotherUser(t *testing.T) {
	needFUSEHosts(t)
	// Every directory down to the run root may be entered by others, as
	// /run/tbstream is.
	base, err := os.MkdirTemp("", "tbstream-list-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	run := startHostsAt(testContext(t), t, filepath.Join(base, "run"))
	hosts := []string{"host1", "host2"}

	var out bytes.Buffer
	var euid int
	var ownerErr, listErr, unplugErr, stacksErr error
	asUser(t, nobody, func() {
		euid = os.Geteuid()
		_, ownerErr = daemon.Owner(hostDir(run, "host1"))
		listErr = list(&out, run, hosts, true)
		unplugErr = daemon.Unplug(hostDir(run, "host1"))
		stacksErr = daemon.WriteStacks(io.Discard, hostDir(run, "host1"))
	})
	require.Equal(t, nobody, euid)
	require.ErrorIs(t, ownerErr, fs.ErrPermission, "the lock is root's")
	require.NoError(t, listErr, out.String())
	for _, h := range hosts {
		assert.Contains(t, out.String(), "Host "+h+" (devices: fuse)\n")
	}
	assert.Contains(t, out.String(), " threads, ? open files, ")
	assert.Contains(t, out.String(), "Domain 0 Route 503 Index 0: stream (prtcid 1)")
	require.ErrorContains(t, unplugErr, "refused: unplug needs root")
	require.ErrorContains(t, stacksErr, "no answer")

	out.Reset()
	require.NoError(t, list(&out, run, hosts, true))
	assert.NotContains(t, out.String(), "? open files", "root sees it all")
	require.NoError(t, daemon.WriteStacks(io.Discard, hostDir(run, "host1")), "root may ask for stacks")
}
