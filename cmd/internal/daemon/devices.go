package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"tbstream/cmd/internal/stream"
	"tbstream/cuse"
)

// cuseDevices registers each stream as a CUSE device: a real character
// device /dev/<prefix>tbstreamN. With a prefix naming a directory
// ("host1/"), each node also gets a link in DevLinksDir, the shells' /dev.
type cuseDevices struct {
	prefix string
	node   cuse.NodeOptions
	log    *slog.Logger
	links  *devLinks // nil when the nodes are /dev/tbstreamN themselves

	mu      sync.Mutex
	servers map[*cuse.Server]struct{}
	panics  uint64 // recovered by servers closed since
}

// Panics counts the handler panics the CUSE servers recovered, closed
// ones included.
func (c *cuseDevices) Panics() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.panics
	for srv := range c.servers {
		n += srv.Stats().Panics.Load()
	}
	return n
}

func (c *cuseDevices) Register(name string, dev cuse.Device) (stream.Node, error) {
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
	if c.links != nil {
		if err := c.links.add(name); err != nil {
			c.log.Warn("no device link in the shells' /dev", "node", name, "err", err)
		}
	}
	return &cuseNode{c: c, srv: srv, name: name}, nil
}

// newCuseDevices returns the CUSE registry; with a prefix that names a
// directory below /dev, it mounts DevLinksDir with links to that
// directory's nodes as the shells see it (RealDevDir/<dir>).
func newCuseDevices(run, prefix string, node cuse.NodeOptions, log *slog.Logger) (*cuseDevices, error) {
	c := &cuseDevices{prefix: prefix, node: node, log: log}
	if dir := filepath.Dir(prefix + "tbstream0"); dir != "." {
		links, err := mountDevLinks(run, filepath.Join(RealDevDir(run), dir), log)
		if err != nil {
			return nil, err
		}
		c.links = links
	}
	return c, nil
}

type cuseNode struct {
	c    *cuseDevices
	srv  *cuse.Server
	name string
}

func (n *cuseNode) Unlink() {
	if n.c.links != nil {
		n.c.links.remove(n.name)
	}
	if err := n.srv.RemoveNode(); err != nil {
		n.c.log.Warn("cannot remove device node", "node", n.name, "err", err)
	}
}

func (n *cuseNode) Close() {
	n.srv.Close()
	n.c.mu.Lock()
	delete(n.c.servers, n.srv)
	n.c.panics += n.srv.Stats().Panics.Load()
	n.c.mu.Unlock()
}

func (c *cuseDevices) Close() error {
	c.mu.Lock()
	servers := c.servers
	c.servers = nil
	c.mu.Unlock()
	for srv := range servers {
		srv.Close()
	}
	if c.links != nil {
		return c.links.close()
	}
	return nil
}

// fuseDevices serves the streams as files of a FUSE mount, <run>/dev, where
// /dev/cuse is missing.
// Each node also gets a link in DevLinksDir, the shells' /dev.
type fuseDevices struct {
	dir   *cuse.Dir
	links *devLinks
	node  cuse.NodeOptions
}

// Panics counts the handler panics the mount recovered.
func (f *fuseDevices) Panics() uint64 { return f.dir.Stats().Panics.Load() }

func newFuseDevices(run string, node cuse.NodeOptions, log *slog.Logger) (*fuseDevices, error) {
	path, err := makeSubdir(run, filepath.Base(DevDir(run)))
	if err != nil {
		return nil, err
	}
	dir, err := cuse.MountDir(path, cuse.DirOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("mount device directory: %w", err)
	}
	links, err := mountDevLinks(run, path, log)
	if err != nil {
		dir.Unmount()
		return nil, err
	}
	return &fuseDevices{dir: dir, links: links, node: node}, nil
}

func (f *fuseDevices) Register(name string, dev cuse.Device) (stream.Node, error) {
	if err := f.dir.Add(name, cuse.File{Device: dev, Mode: f.node.Mode, UID: uint32(f.node.UID), GID: uint32(f.node.GID)}); err != nil {
		return nil, err
	}
	if err := f.links.add(name); err != nil {
		f.dir.Remove(name)
		return nil, err
	}
	return fuseNode{f: f, name: name}, nil
}

// fuseNode is a file of the fallback mount; handles opened before Unlink
// keep working, so Close has nothing to do.
type fuseNode struct {
	f    *fuseDevices
	name string
}

func (n fuseNode) Unlink() {
	n.f.links.remove(n.name)
	n.f.dir.Remove(n.name)
}

func (n fuseNode) Close() {}

func (f *fuseDevices) Close() error {
	return errors.Join(f.links.close(), f.dir.Unmount())
}
