package fusefile

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Dir is a mounted directory whose device files come and go while it is
// mounted, as /dev nodes do: the daemon adds tbstreamN at mkdir and removes
// it at rmdir. Handles opened before a removal keep working.
type Dir struct {
	srv  *fuse.Server
	root *rootNode
	mu   sync.Mutex // serializes changes of the tree
}

// MountDir mounts an empty Dir on dir (which must exist).
func MountDir(dir string, opts Options) (*Dir, error) {
	root := &rootNode{}
	srv, err := mount(dir, root, opts)
	if err != nil {
		return nil, err
	}
	return &Dir{srv: srv, root: root}, nil
}

// Add makes name serve f; EEXIST if name is there already.
func (d *Dir) Add(name string, f File) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.root.GetChild(name) != nil || !d.root.add(context.Background(), name, f) {
		return fmt.Errorf("add %s: %w", name, syscall.EEXIST)
	}
	return nil
}

// Remove takes name away; new opens fail with ENOENT.
func (d *Dir) Remove(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.root.RmChild(name)
}

// Panics returns how many panics of its devices (and of this package's
// code) the mount has recovered, each answered EIO and logged.
func (d *Dir) Panics() uint64 { return d.root.g.panics.Load() }

// Unmount unmounts the directory.
func (d *Dir) Unmount() error { return d.srv.Unmount() }
