package configfs_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"tbstream/configfs"
)

// A daemon mounts the tree over its backend and serves until SIGINT or SIGTERM; bind the
// mount point over /sys/kernel/config for the kernel's paths.
func ExampleMount() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	server, err := configfs.Mount(ctx, "/run/tbstream/config", configfs.NewMemBackend(), configfs.Options{})
	if err != nil {
		log.Fatal(err)
	}
	server.Wait() // until ctx is done, or someone unmounts it
}
