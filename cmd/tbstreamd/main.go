// Command tbstreamd runs one tbstream host: an NHI (emulated, or real
// through VFIO), XDomain discovery, the USB4STREAM service, its configfs
// tree and its /dev/tbstreamN devices. See package tbstream/cmd/internal/daemon,
// and `tbstream help daemon` for the manual.
//
// It refuses a run directory (-run-dir) that is a symlink, is not root's or
// that others can write, with one line naming it, and closes at start every
// descriptor it inherited beyond stdin, stdout and stderr.
//
// Exit status: 0 after -h, -version or a stop by SIGTERM or SIGINT; 1 when
// the host fails to start or run; 2 for a command line it refuses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"tbstream/cmd/internal/daemon"
)

const prog = "tbstreamd"

// usageHead opens `tbstreamd -h`; daemon.FlagDefaults follows it.
const usageHead = `usage: tbstreamd -run-dir DIR [FLAGS]

tbstreamd runs one tbstream host in the foreground: an emulated NHI with a
cable to its peer (or a real NHI through VFIO), XDomain discovery, the
USB4STREAM service, the configfs tree and the /dev/tbstreamN devices.
SIGTERM or SIGINT closes its streams, removes its nodes and unmounts.
The manual: tbstream help daemon.

flags:
`

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead+daemon.FlagDefaults()+"  -h, --help\n        print this text and exit\n")
}

func main() {
	// Before anything else: a descriptor the starter left open would
	// stay open until the daemon stops.
	inherited, fdErr := daemon.CloseInherited()
	opts, err := daemon.ParseFlags(prog, os.Args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage(os.Stdout)
		return
	case errors.Is(err, daemon.ErrVersion):
		fmt.Println(daemon.Version(prog))
		return
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\nrun '%s -h' for usage\n", prog, err, prog)
		os.Exit(2)
	}
	daemon.LogInherited(opts.Logger, inherited, fdErr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, opts); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		os.Exit(1)
	}
}
