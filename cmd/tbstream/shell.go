package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"tbstream/cmd/internal/daemon"
)

// shellSetup runs in a private mount namespace (unshare -m) as root. $1 is
// the host's run directory, $2 the directory of its tbstreamN nodes. Where a directory must gain an entry that the
// kernel does not provide (/sys/kernel/config without configfs, the
// fallback's /dev/tbstreamX), a tmpfs replaces it whose entries are
// symlinks to the real ones, so everything else stays reachable.
const shellSetup = `set -e
run=$1 devdir=$2; shift 2
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
if [ "$devdir" != /dev ]; then
	shadow /dev "$run/.shadow-dev"
	rm -f /dev/tbstream*
	case $devdir in /dev/*) devdir="$run/.shadow-dev/${devdir#/dev/}";; esac
	i=0
	while [ $i -lt 64 ]; do ln -s "$devdir/tbstream$i" "/dev/tbstream$i"; i=$((i+1)); done
fi
exec "$@"
`

// shell runs cmd (default: $SHELL) as the documentation's commands expect
// on host: /sys/kernel/config is the host's configfs and /dev/tbstreamX
// its devices. The mounts are private to the command and vanish with it.
func shell(run, host string, cmd []string) error {
	dir := hostDir(run, host)
	st, err := daemon.ReadStatus(dir)
	if err != nil {
		return fmt.Errorf("host %s is not running (tbstream up starts host1 and host2): %w", host, err)
	}
	if len(cmd) == 0 {
		sh := os.Getenv("SHELL")
		if sh == "" {
			sh = "/bin/sh"
		}
		cmd = []string{sh}
	}
	c := hostCommand(dir, st.DeviceDir, host, cmd...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = c.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &exitError{code: exit.ExitCode()}
	}
	return err
}

// hostCommand is cmd run in host's view of the system (see shell): dir is
// its run directory, devDir where its nodes are.
func hostCommand(dir, devDir, host string, cmd ...string) *exec.Cmd {
	args := append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", shellSetup, "tbstream-shell", dir, devDir}, cmd...)
	c := exec.Command("unshare", args...)
	c.Env = append(os.Environ(), "TBSTREAM_HOST="+host)
	return c
}
