package configfs

import (
	"context"
	"errors"
	"syscall"
)

// Backend creates the objects behind the directories users make in stream/. The daemon
// implements it with real streams; MemBackend implements it in memory.
//
// Errors: return a syscall.Errno (possibly wrapped) to have the user's syscall fail with it,
// as a configfs driver returns -Exxx: EBUSY for a write while the device is open, ENOSPC
// when HopIDs are exhausted, and so on. Any other error reaches the user as EIO and is
// logged once.
//
// Concurrency: configfs serialises MakeGroup, Group.MakeItem, Group.Remove and Item.Remove
// with each other, and never runs an item's Show or Store concurrently with its Remove or
// after Remove succeeded. Show and Store of the same or different items may run
// concurrently with each other.
type Backend interface {
	// MakeGroup is called for `mkdir stream/<name>` once name has parsed as
	// <domain>-<route>.<service>. It must succeed whether or not that peer is connected
	// (groups may exist first and attach later). Returning (nil, nil) fails the mkdir with
	// ENOMEM, like a make_group() returning NULL.
	MakeGroup(ctx context.Context, name GroupName) (Group, error)
}

// Group is one stream/<domain>-<route>.<service> directory.
type Group interface {
	// MakeItem is called for `mkdir <group>/<name>` with a name of at most MaxStreamName
	// bytes that does not exist yet. (nil, nil) fails the mkdir with ENOMEM.
	MakeItem(ctx context.Context, name string) (Item, error)
	// Remove is called for `rmdir <group>` once the group holds no items. The kernel
	// never fails here; an error keeps the directory (EBUSY models configfs's
	// "dependents").
	Remove(ctx context.Context) error
}

// Item is one stream, <group>/<name>, with its attribute files.
type Item interface {
	// Show returns the attribute's value; configfs prints it.
	Show(ctx context.Context, attr Attr) (int64, error)
	// Store sets a writable attribute (never AttrIndex). value has passed the driver's
	// parse and range checks (see Attr); busy_poll arrives as 0 or 1. The backend's own
	// refusals (EBUSY while open, HopID out of range EINVAL, taken EBUSY, exhausted ENOSPC)
	// are its to return.
	Store(ctx context.Context, attr Attr, value int64) error
	// Remove is called for `rmdir <group>/<name>`. The kernel never fails here either.
	Remove(ctx context.Context) error
}

// errnoOf returns the errno a backend error carries, or 0 and false when it carries none.
func errnoOf(err error) (syscall.Errno, bool) {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return errno, true
	}
	return 0, false
}
