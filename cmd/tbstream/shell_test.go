package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"tbstream/cmd/internal/daemon"
)

func TestShellArgs(t *testing.T) {
	bin := "/run/tbstream/host1/.shell-bin"
	rc := []string{"--rcfile", bin + "/bashrc"}
	for _, c := range []struct{ cmd, want []string }{
		{[]string{"/bin/bash"}, append([]string{"/bin/bash"}, rc...)},
		{[]string{"bash", "-i"}, append(append([]string{"bash"}, rc...), "-i")},
		{[]string{"bash", "-c", "echo"}, []string{"bash", "-c", "echo"}},
		{[]string{"bash", "script.sh"}, []string{"bash", "script.sh"}},
		{[]string{"/bin/sh"}, []string{"/bin/sh"}},
		{[]string{"dash", "-i"}, []string{"dash", "-i"}},
		{[]string{"zsh"}, []string{"zsh"}},
	} {
		assert.Equal(t, c.want, shellArgs(c.cmd, bin), "%v", c.cmd)
	}
}

func TestShellEnv(t *testing.T) {
	env := shellEnv([]string{"PATH=/usr/bin", "PS1=old> ", "HOME=/root"}, "host2", 0)
	assert.Contains(t, env, "PS1=host2# ")
	assert.NotContains(t, env, "PS1=old> ")
	assert.Contains(t, env, "TBSTREAM_HOST=host2")
	assert.Contains(t, env, "PATH=/usr/bin")
	assert.Contains(t, env, "TBSTREAM_BASHRC="+shellRC("host2", 0))
	assert.Contains(t, shellEnv(nil, "host1", 1000), "PS1=host1$ ")
}

// bash's rc file sets the prompt after the user's ~/.bashrc, which may set
// its own, and keeps a host name with the shell's special characters as
// it is.
func TestShellRC(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	home := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(home, ".bashrc"), []byte("PS1='mine> '\nFROM_BASHRC=1\n"), 0o644))
	rc := filepath.Join(t.TempDir(), "bashrc")
	for _, c := range []struct {
		host string
		euid int
		want string
	}{
		{"host1", 0, "host1# "},
		{"host2", 1000, "host2$ "},
		{`h'o$(id)\u`, 0, `h'o$(id)\u# `},
	} {
		require.NoError(t, os.WriteFile(rc, []byte(shellRC(c.host, c.euid)), 0o644))
		cmd := exec.Command(bash, "--norc", "-c", `. "$1"; printf '%s|%s' "${PS1@P}" "$FROM_BASHRC"`, "bash", rc)
		cmd.Env = []string{"HOME=" + home}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Equal(t, c.want+"|1", string(out), c.host)
	}
}

// The shell on a running host: its prompt, PATH (the shell's modprobe,
// then this binary's directory) and TBSTREAM_HOST; an interactive bash
// shows the host's prompt over the one ~/.bashrc sets.
func TestShellOnRunningHost(t *testing.T) {
	needFUSEHosts(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	ctx := testContext(t)
	run := startHosts(ctx, t)
	dir := hostDir(run, "host1")
	st, err := daemon.ReadStatus(dir)
	require.NoError(t, err)

	c := hostCommand(dir, st.DeviceDir, "host1", "sh", "-c", `printf '%s\n' "$PS1" "$PATH" "$TBSTREAM_HOST"; command -v modprobe`)
	out, err := c.CombinedOutput()
	require.NoError(t, err, "%s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 4, "%s", out)
	assert.Equal(t, "host1# ", lines[0])
	self, err := os.Executable()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(lines[1], shellBin(dir)+":"+filepath.Dir(self)+":"), lines[1])
	assert.Equal(t, "host1", lines[2])
	assert.Equal(t, filepath.Join(shellBin(dir), "modprobe"), lines[3])

	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash for the interactive part")
	}
	home := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(home, ".bashrc"), []byte("PS1='mine> '\n"), 0o644))
	c = hostCommand(dir, st.DeviceDir, "host1", shellArgs([]string{bash, "-i"}, shellBin(dir))...)
	c.Env = append(c.Env, "HOME="+home)
	c.Stdin = strings.NewReader("echo marker\nexit 7\n")
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err = c.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 7, exit.ExitCode())
	assert.Equal(t, "marker\n", stdout.String())
	assert.Contains(t, stderr.String(), "host1# echo marker", "bash prints its prompt on standard error")
	assert.NotContains(t, stderr.String(), "mine> ")
}
