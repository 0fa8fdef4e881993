package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"tbstream/cuse"
	"tbstream/cuse/fusefile"
)

// cuseDevices registers each stream as a CUSE device: a real character
// device /dev/<prefix>tbstreamN.
type cuseDevices struct {
	prefix string
	node   cuse.NodeOptions
	log    *slog.Logger

	mu      sync.Mutex
	servers map[*cuse.Server]struct{}
}

func (c *cuseDevices) Register(name string, dev cuse.Device) (func(), error) {
	srv, err := cuse.Open(dev, cuse.Options{Name: c.prefix + name, Node: c.node, Logger: c.log})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := srv.Init(ctx); err != nil {
		srv.Close()
		return nil, err
	}
	go func() {
		if err := srv.Serve(ctx); err != nil {
			c.log.Warn("cuse device stopped", "node", name, "err", err)
		}
	}()
	c.mu.Lock()
	if c.servers == nil {
		c.servers = map[*cuse.Server]struct{}{}
	}
	c.servers[srv] = struct{}{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.servers, srv)
		c.mu.Unlock()
		srv.Close()
	}, nil
}

func (c *cuseDevices) Close() error {
	c.mu.Lock()
	servers := c.servers
	c.servers = nil
	c.mu.Unlock()
	for srv := range servers {
		srv.Close()
	}
	return nil
}

// fuseDevices serves the streams as files of a FUSE mount, <run>/dev, where
// /dev/cuse is missing.
type fuseDevices struct {
	dir  *fusefile.Dir
	node cuse.NodeOptions
}

func newFuseDevices(path string, node cuse.NodeOptions, log *slog.Logger) (*fuseDevices, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, err
	}
	dir, err := fusefile.MountDir(path, fusefile.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("mount device directory: %w", err)
	}
	return &fuseDevices{dir: dir, node: node}, nil
}

func (f *fuseDevices) Register(name string, dev cuse.Device) (func(), error) {
	if err := f.dir.Add(name, fusefile.File{Device: dev, Mode: f.node.Mode, UID: uint32(f.node.UID), GID: uint32(f.node.GID)}); err != nil {
		return nil, err
	}
	return func() { f.dir.Remove(name) }, nil
}

func (f *fuseDevices) Close() error { return f.dir.Unmount() }
