// Command tbstreamd runs one tbstream host: an NHI (emulated, or real
// through VFIO), XDomain discovery, the USB4STREAM service, its configfs
// tree and its /dev/tbstreamN devices. See package tbstream/cmd/internal/daemon.
//
// It refuses a run directory (-run-dir) that is a symlink, is not root's or
// that others can write, with one line naming it, and closes at start every
// descriptor it inherited beyond stdin, stdout and stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"tbstream/cmd/internal/daemon"
)

func main() {
	// Before anything else: a descriptor the starter left open would
	// stay open until the daemon stops.
	inherited, fdErr := daemon.CloseInherited()
	opts, err := daemon.ParseFlags(os.Args[0], os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	daemon.LogInherited(opts.Logger, inherited, fdErr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "tbstreamd:", err)
		os.Exit(1)
	}
}
