package configfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options tune a mount. The zero value is what a daemon wants.
type Options struct {
	// Logger receives one line for each backend error that carries no errno, and go-fuse's
	// request trace with Debug. Default: slog.Default().
	Logger *slog.Logger
	// Debug logs every FUSE request and reply.
	Debug bool
}

// Server is a mounted pseudo-configfs.
type Server struct {
	dir    string
	server *fuse.Server
	tree   *tree
	stop   func() bool // ends the watch of Mount's context

	once sync.Once
	err  error
}

// Mount mounts the tree on mountpoint (an existing directory) so that
// mountpoint/thunderbolt/stream/ is what /sys/kernel/config/thunderbolt/stream/ is on a
// kernel with thunderbolt_stream; bind mountpoint over /sys/kernel/config and the
// documented commands work verbatim. It mounts with
// mount(2) (no fusermount), so it needs CAP_SYS_ADMIN and /dev/fuse. A stale FUSE mount
// left on dir by a killed daemon is detached first. The mount lasts until Unmount or
// until ctx is done.
//
// The mount is root's, world-readable and checked by the kernel (default_permissions,
// allow_other): only root may write attributes or make directories, as on configfs.
// Nothing is cached (zero entry, attribute and negative timeouts; direct I/O on
// attributes), so every command sees the backend's current state.
func Mount(ctx context.Context, mountpoint string, backend Backend, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if err := detachStale(mountpoint, logger); err != nil {
		return nil, err
	}
	var zero time.Duration
	// go-fuse logs its failures, and with Debug every request, through a log.Logger.
	traceLevel := slog.LevelWarn
	if opts.Debug {
		traceLevel = slog.LevelInfo
	}
	traceLog := slog.NewLogLogger(logger.Handler(), traceLevel)
	fsOpts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:        true,
			Options:           []string{"default_permissions"},
			FsName:            "configfs",
			Name:              "configfs",
			DirectMountStrict: true, // mount(2) and umount(2) only: there is no fusermount
			DisableXAttrs:     true, // configfs has none: EOPNOTSUPP, and no GETXATTR per ls -l
			Debug:             opts.Debug,
			Logger:            traceLog,
		},
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		NullPermissions: true, // a chmod 000 stays 000
		Logger:          traceLog,
	}
	root := &dir{t: newTree(backend, logger), kind: kindRoot}
	fsOpts.MountOptions.PanicHandler = root.t.fusePanic
	server, err := fs.Mount(mountpoint, root, fsOpts)
	if err != nil {
		return nil, fmt.Errorf("mount configfs on %s: %w", mountpoint, err)
	}
	s := &Server{dir: mountpoint, server: server, tree: root.t}
	s.stop = context.AfterFunc(ctx, func() {
		if err := s.unmount(); err != nil {
			logger.Error("unmount configfs", "dir", mountpoint, "err", err)
		}
	})
	return s, nil
}

// Panics returns how many panics of the backend (and of this package's code) the mount
// has recovered, each answered EIO and logged.
func (s *Server) Panics() uint64 { return s.tree.panics.Load() }

// Dir returns the mount point.
func (s *Server) Dir() string { return s.dir }

// Unmount unmounts and waits until the FUSE server has stopped. When the mount is busy (a
// shell's working directory is inside it), it is detached lazily instead and Unmount
// returns an error saying so without waiting. Calling it again returns the first result.
func (s *Server) Unmount() error {
	s.stop()
	return s.unmount()
}

func (s *Server) unmount() error {
	s.once.Do(func() {
		err := s.server.Unmount()
		if err == nil {
			s.server.Wait()
			return
		}
		if derr := syscall.Unmount(s.dir, syscall.MNT_DETACH); derr != nil {
			s.err = fmt.Errorf("unmount configfs on %s: %w (lazy detach: %w)", s.dir, err, derr)
			return
		}
		s.err = fmt.Errorf("unmount configfs on %s: %w; detached lazily, it goes when its last user leaves", s.dir, err)
	})
	return s.err
}

// Wait blocks until the mount is gone (unmounted by Unmount or from outside).
func (s *Server) Wait() { s.server.Wait() }

// detachStale detaches a FUSE mount whose server died: its mount point answers ENOTCONN.
func detachStale(mountpoint string, logger *slog.Logger) error {
	_, err := os.Stat(mountpoint)
	if !errors.Is(err, syscall.ENOTCONN) {
		return nil
	}
	logger.Warn("detaching a stale configfs mount", "dir", mountpoint)
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("detach stale mount %s: %w", mountpoint, err)
	}
	return nil
}
