package cuse

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// NodeOptions say where the device node appears and who may open it.
// devtmpfs creates CUSE nodes 0600 root:root (the cuse class has no
// devnode callback) and there may be no udev to change that, so the server
// applies Mode, UID and GID itself once the node exists.
type NodeOptions struct {
	// Dir is where devtmpfs puts the node (default "/dev").
	Dir string
	// SysClass is the cuse class directory in sysfs (default
	// "/sys/class/cuse"); when devtmpfs did not create the node, the server
	// makes it from <SysClass>/<name>/dev and removes it at shutdown.
	SysClass string
	// Mode is the permission bits (default 0600, like the kernel's misc
	// device).
	Mode os.FileMode
	// UID and GID own the node (default 0, root).
	UID, GID int
	// Wait bounds how long Init waits for the node (default 5 s); the
	// kernel registers the device while handling the CUSE_INIT reply, so
	// it is normally there at once.
	Wait time.Duration
	// Keep leaves the node exactly as the kernel made it.
	Keep bool
}

// DefaultNodeMode is the mode of /dev/tbstreamN when nothing else is asked.
const DefaultNodeMode os.FileMode = 0o600

type node struct {
	name string
	opts NodeOptions
	path string
	made bool // we mknod'ed it, so we remove it
}

func newNode(name string, o NodeOptions) node {
	if o.Dir == "" {
		o.Dir = "/dev"
	}
	if o.SysClass == "" {
		o.SysClass = "/sys/class/cuse"
	}
	if o.Mode == 0 {
		o.Mode = DefaultNodeMode
	}
	if o.Wait == 0 {
		o.Wait = 5 * time.Second
	}
	return node{name: name, opts: o, path: filepath.Join(o.Dir, name)}
}

// setup waits for the node, makes it if devtmpfs did not, and applies mode
// and owner.
func (n *node) setup(ctx context.Context) error {
	if n.opts.Keep {
		return nil
	}
	deadline := time.Now().Add(n.opts.Wait)
	for {
		if _, err := os.Lstat(n.path); err == nil {
			break
		}
		if dev, err := n.sysDev(); err == nil {
			if err := unix.Mknod(n.path, unix.S_IFCHR|uint32(n.opts.Mode.Perm()), int(dev)); err == nil {
				n.made = true
				break
			} else if !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("mknod %s: %w", n.path, err)
			}
			continue // devtmpfs won the race
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("device node %s did not appear (name taken, or the kernel refused the CUSE_INIT reply)", n.path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := os.Chown(n.path, n.opts.UID, n.opts.GID); err != nil {
		return fmt.Errorf("chown %s: %w", n.path, err)
	}
	if err := os.Chmod(n.path, n.opts.Mode.Perm()); err != nil {
		return fmt.Errorf("chmod %s: %w", n.path, err)
	}
	return nil
}

// sysDev reads the device number the kernel gave the node ("MAJ:MIN").
func (n *node) sysDev() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(n.opts.SysClass, n.name, "dev"))
	if err != nil {
		return 0, err
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok {
		return 0, fmt.Errorf("%s/dev: %q", n.name, b)
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s/dev: %q", n.name, b)
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), nil
}

// remove deletes a node we made; one devtmpfs made goes away with the
// connection.
func (n *node) remove() {
	if n.made {
		os.Remove(n.path)
		n.made = false
	}
}

// RemoveNode unlinks the device node while the device keeps serving the
// handles already open, so new opens fail with ENOENT (what rmdir of a
// stream wants before its last user has closed it). The kernel's device
// stays registered until the server stops, so its name is not free for
// another device before then.
func (s *Server) RemoveNode() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(s.node.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: remove node: %w", s.opts.Name, err)
	}
	s.node.made = false
	return nil
}
