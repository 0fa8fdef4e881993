package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"tbstream/cmd/internal/daemon"
)

// shellSetup runs in a private mount namespace (unshare -m) as root. $1 is
// the host's run directory, $2 the directory of its tbstreamN nodes, $3
// where the real /dev is bound when the daemon provides the shell's /dev
// ($4, the FUSE fallback's device links), $5 the shell's own bin directory,
// which gets $TBSTREAM_MODPROBE as its modprobe and $TBSTREAM_BASHRC as
// bash's rc file, $6 the directory of the running tbstream ("" if
// unknown), which follows $5 on PATH. Where a directory must gain an entry that
// the kernel does not provide (/sys/kernel/config without configfs,
// /sys/bus/thunderbolt, /sys/module/thunderbolt_stream, /dev/tbstreamX of
// CUSE nodes in a subdirectory), a tmpfs replaces it whose entries are
// symlinks to the real ones, so everything else stays reachable.
const shellSetup = `set -e
run=$1 devdir=$2 realdev=$3 links=$4 bin=$5 self=$6; shift 6
shadow() {
	mkdir -p "$2"
	mount --bind "$1" "$2"
	mount -t tmpfs -o mode=0755 tbstream "$1"
	for e in "$2"/* "$2"/.[!.]*; do
		if [ -e "$e" ] || [ -L "$e" ]; then ln -s "$e" "$1/${e##*/}"; fi
	done
}
if [ ! -d /sys/kernel/config ]; then
	shadow /sys/kernel "$run/.shadow-sys-kernel"
	mkdir /sys/kernel/config
fi
mount --bind "$run/config" /sys/kernel/config
if [ -d "$run/sys/bus/thunderbolt" ]; then
	if [ ! -d /sys/bus/thunderbolt ]; then
		shadow /sys/bus "$run/.shadow-sys-bus"
		mkdir /sys/bus/thunderbolt
	fi
	mount --bind "$run/sys/bus/thunderbolt" /sys/bus/thunderbolt
	if [ ! -d /sys/module/thunderbolt_stream ]; then
		shadow /sys/module "$run/.shadow-sys-module"
		mkdir /sys/module/thunderbolt_stream
	fi
	mount --bind "$run/sys/module/thunderbolt_stream" /sys/module/thunderbolt_stream
fi
if [ "$devdir" != /dev ] && [ -L "$links/null" ]; then
	# The daemon's /dev: tbstreamN exist exactly while their streams do.
	mkdir -p "$realdev"
	mount -o rbind /dev "$realdev"
	for e in "$realdev"/* "$realdev"/.[!.]*; do
		n=${e##*/}
		case $n in tbstream*) continue;; esac
		if { [ -e "$e" ] || [ -L "$e" ]; } && [ ! -L "$links/$n" ] && [ ! -e "$links/$n" ]; then
			ln -s "$e" "$links/$n" 2>/dev/null || :
		fi
	done
	mount --bind "$links" /dev
elif [ "$devdir" != /dev ]; then
	shadow /dev "$run/.shadow-dev"
	rm -f /dev/tbstream*
	case $devdir in /dev/*) devdir="$run/.shadow-dev/${devdir#/dev/}";; esac
	i=0
	while [ $i -lt 64 ]; do ln -s "$devdir/tbstream$i" "/dev/tbstream$i"; i=$((i+1)); done
fi
mkdir -p "$bin"
mount -t tmpfs -o mode=0755 tbstream-bin "$bin"
printf '%s' "$TBSTREAM_MODPROBE" > "$bin/modprobe"
chmod 755 "$bin/modprobe"
printf '%s' "$TBSTREAM_BASHRC" > "$bin/bashrc"
unset TBSTREAM_MODPROBE TBSTREAM_BASHRC
export PATH="$bin${self:+:$self}:$PATH"
exec "$@"
`

// shell runs cmd (default: $SHELL) as the documentation's commands expect
// on host: /sys/kernel/config is the host's configfs, /sys/bus/thunderbolt
// and /sys/module/thunderbolt_stream its sysfs view, /dev/tbstreamX its
// devices, and modprobe answers for thunderbolt_stream. The mounts are
// private to the command and vanish with it. The prompt names the host.
func shell(run, host string, cmd []string) error {
	// The setup script mounts on and makes directories in the run
	// directory, as root: not in one others could write (needHost
	// checks).
	st, err := needHost(run, host)
	if err != nil {
		return err
	}
	dir := hostDir(run, host)
	if len(cmd) == 0 {
		sh := os.Getenv("SHELL")
		if sh == "" {
			sh = "/bin/sh"
		}
		cmd = []string{sh}
	}
	c := hostCommand(dir, st.DeviceDir, host, shellArgs(cmd, shellBin(dir))...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = c.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &exitError{code: exit.ExitCode()}
	}
	if err != nil {
		return fmt.Errorf("shell on %s: %w", host, err)
	}
	return nil
}

// shellArgs is cmd with, for an interactive bash (bash, bash -i), the
// shell's rc file (bin/bashrc, shellRC): the system's and the user's rc
// files may set PS1 over the one in the environment; this one runs the
// user's, then sets the host's.
func shellArgs(cmd []string, bin string) []string {
	if filepath.Base(cmd[0]) != "bash" {
		return cmd
	}
	for _, a := range cmd[1:] {
		if a != "-i" {
			return cmd
		}
	}
	return append([]string{cmd[0], "--rcfile", filepath.Join(bin, "bashrc")}, cmd[1:]...)
}

// shellRC is bash's rc file in a shell on host: bash has run the
// system's (/etc/bash.bashrc where it has one) already, which may set PS1
// as the user's own does; this runs the user's, then sets the prompt.
func shellRC(host string, euid int) string {
	// Quoted for the shell, and for bash's prompt expansion: its
	// backslash escapes (where \$ means # for root) decode \\ to \,
	// and the expansion that follows takes \$, \` and \\ as the
	// characters themselves.
	prompt := strings.NewReplacer(`\`, `\\\\`, "$", `\\$`, "`", "\\\\`").Replace(shellPrompt(host, euid))
	return "# tbstream shell: your ~/.bashrc, then the host's prompt.\n" +
		"if [ -f ~/.bashrc ]; then . ~/.bashrc; fi\n" +
		"PS1=" + shellQuote(prompt) + "\n"
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shellPrompt is the prompt of a shell on host: "host# " for root,
// "host$ " for another user.
func shellPrompt(host string, euid int) string {
	if euid == 0 {
		return host + "# "
	}
	return host + "$ "
}

// shellEnv is the environment of a command on host (environ the
// caller's): TBSTREAM_HOST, PS1, and for the setup script the shell's
// modprobe and bash rc file.
func shellEnv(environ []string, host string, euid int) []string {
	env := make([]string, 0, len(environ)+4)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "PS1=") {
			env = append(env, kv)
		}
	}
	return append(env, "TBSTREAM_HOST="+host, "PS1="+shellPrompt(host, euid),
		"TBSTREAM_MODPROBE="+modprobeScript(realModprobe(), "/sys/module/thunderbolt_stream"),
		"TBSTREAM_BASHRC="+shellRC(host, euid))
}

// selfDir is the directory of the running binary, which the shell puts
// on PATH, or "" when it cannot be found.
func selfDir() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Dir(self)
}

// hostCommand is cmd run in host's view of the system (see shell): dir is
// its run directory, devDir where its nodes are.
func hostCommand(dir, devDir, host string, cmd ...string) *exec.Cmd {
	args := append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", shellSetup, "tbstream-shell",
		dir, devDir, daemon.RealDevDir(dir), daemon.DevLinksDir(dir), shellBin(dir), selfDir()}, cmd...)
	c := exec.Command("unshare", args...)
	c.Env = shellEnv(os.Environ(), host, os.Geteuid())
	return c
}
