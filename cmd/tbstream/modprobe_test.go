package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestModprobe runs the shell's modprobe with a stand-in for the system's
// (which prints its arguments) and a module directory with a refcnt.
func TestModprobe(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real-modprobe")
	require.NoError(t, os.WriteFile(real, []byte("#!/bin/sh\necho \"real: $*\"\n"), 0o755))
	moddir := filepath.Join(dir, "module")
	require.NoError(t, os.Mkdir(moddir, 0o755))
	tests := []struct {
		name           string
		real           string
		refcnt         string
		args           []string
		stdout, stderr string
		code           int
	}{
		{name: "load", args: []string{"thunderbolt_stream"}},
		{name: "dash name", args: []string{"thunderbolt-stream"}},
		{name: "load with a parameter", args: []string{"thunderbolt_stream", "x=1"}},
		{name: "quiet verbose", args: []string{"-qv", "thunderbolt_stream"}},
		{name: "first time", args: []string{"--first-time", "thunderbolt_stream"}, code: 1,
			stderr: "modprobe: ERROR: could not insert 'thunderbolt_stream': Module already in kernel\n"},
		{name: "other module", args: []string{"-v", "loop", "max_loop=8"}, stdout: "real: -v loop max_loop=8\n"},
		{name: "all, mixed", args: []string{"-a", "thunderbolt_stream", "loop"}, stdout: "real: -a loop\n"},
		{name: "options with an argument", args: []string{"-d", "/x", "thunderbolt_stream"}},
		{name: "remove in use", refcnt: "3", args: []string{"-r", "thunderbolt_stream"}, code: 1,
			stderr: "modprobe: FATAL: Module thunderbolt_stream is in use.\n"},
		{name: "remove in use, quiet", refcnt: "3", args: []string{"-rq", "thunderbolt_stream"}, code: 1},
		{name: "remove unused", refcnt: "0", args: []string{"-rv", "thunderbolt_stream"}, stdout: "rmmod thunderbolt_stream\n",
			stderr: "modprobe: tbstream: thunderbolt_stream not removed: Linux would unload it now (nothing uses it); here the host's daemon serves it (tbstream down stops it)\n"},
		{name: "remove two", refcnt: "0", args: []string{"-r", "-q", "thunderbolt_stream", "loop"}, stdout: "real: -r -q loop\n"},
		{name: "no system modprobe", real: "none", args: []string{"loop"}, code: 1,
			stderr: "modprobe: no modprobe on this system (only thunderbolt_stream is served by tbstream)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := real
			if tt.real == "none" {
				r = ""
			}
			if tt.refcnt != "" {
				require.NoError(t, os.WriteFile(filepath.Join(moddir, "refcnt"), []byte(tt.refcnt+"\n"), 0o644))
			}
			script := filepath.Join(t.TempDir(), "modprobe")
			require.NoError(t, os.WriteFile(script, []byte(modprobeScript(r, moddir)), 0o755))
			var stdout, stderr bytes.Buffer
			c := exec.Command(script, tt.args...)
			c.Stdout, c.Stderr = &stdout, &stderr
			err := c.Run()
			code := 0
			if exit, ok := err.(*exec.ExitError); ok {
				code = exit.ExitCode()
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tt.code, code, "stderr: %s", stderr.String())
			require.Equal(t, tt.stdout, stdout.String())
			require.Equal(t, tt.stderr, stderr.String())
		})
	}
}
