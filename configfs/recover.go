package configfs

import (
	"fmt"
	"runtime/debug"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// A panic in the backend must cost one syscall, not the daemon with its mounts and
// streams: every backend call goes through guarded, which turns a panic into an error
// carrying EIO (the user's mkdir, rmdir, read or write fails with EIO), logs one line with
// the panic value and the stack, and counts it (Server.Panics). Locks the tree holds across
// the call are released by their defers as usual. go-fuse would recover a panic in a node
// method too, but answer it with a line in its trace log only; its PanicHandler is pointed
// at fusePanic for panics in this package's own code.

// guarded runs one backend call.
func guarded[T any](t *tree, op string, call func() (T, error)) (v T, err error) {
	defer t.recoverBackend(op, &err)
	return call()
}

// recoverBackend, deferred around a backend call, turns a panic into *err. It must be the
// deferred function itself: recover only stops a panic when called directly by one.
func (t *tree) recoverBackend(op string, err *error) {
	if v := recover(); v != nil {
		*err = t.panicked(op, v)
	}
}

// panicked logs and counts a recovered panic (the line is written before the count moves)
// and returns the error the syscall fails with.
func (t *tree) panicked(op string, v any) error {
	t.log.Error("panic in configfs backend; the syscall fails with EIO", "op", op, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	t.panics.Add(1)
	return fmt.Errorf("%s: backend panicked: %v: %w", op, v, syscall.EIO)
}

// fusePanic is go-fuse's PanicHandler: for a panic its own recover caught.
func (t *tree) fusePanic(v any) fuse.Status {
	t.panicked("FUSE request", v)
	return fuse.EIO
}
