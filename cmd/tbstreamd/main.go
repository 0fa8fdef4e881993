// Command tbstreamd runs one tbstream host: an NHI (emulated, or real
// through VFIO), XDomain discovery, the USB4STREAM service, its configfs
// tree and its /dev/tbstreamN devices. See package tbstream/cmd/internal/daemon.
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
	opts, err := daemon.ParseFlags(os.Args[0], os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "tbstreamd:", err)
		os.Exit(1)
	}
}
