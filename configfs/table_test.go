package configfs

import (
	"context"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// shellCase is one user-visible behaviour: a script run by bash in stream/ on a fresh
// mount, with what it must print or the strerror text it must fail with.
type shellCase struct {
	name   string
	setup  string         // run first; must succeed
	fault  func(Op) error // injected into the MemBackend after setup
	script string
	want   string // stdout, when the script must succeed
	err    string // strerror on stderr, when it must fail
	check  func(t *testing.T, m *mounted)
}

func runShellCases(t *testing.T, cases []shellCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mountForTest(t, nil)
			if tc.setup != "" {
				m.ok(tc.setup)
			}
			if tc.fault != nil {
				m.backend.InjectFault(tc.fault)
			}
			if tc.err != "" {
				m.fails(tc.script, tc.err)
			} else {
				require.Equal(t, tc.want, m.ok(tc.script))
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

// failOn returns a fault failing every call of the given kind with errno.
func failOn(kind OpKind, errno syscall.Errno) func(Op) error {
	return func(op Op) error {
		if op.Kind == kind {
			return errno
		}
		return nil
	}
}

// hasGroups checks the backend's groups and items.
func hasGroups(want map[string][]string) func(t *testing.T, m *mounted) {
	return func(t *testing.T, m *mounted) {
		require.Equal(t, want, m.backend.Groups())
	}
}

const (
	eperm     = "Operation not permitted"
	eacces    = "Permission denied"
	einval    = "Invalid argument"
	ebusy     = "Device or resource busy"
	enospc    = "No space left on device"
	erange    = "Numerical result out of range"
	eexist    = "File exists"
	enotempty = "Directory not empty"
	enomem    = "Cannot allocate memory"
	etoolong  = "File name too long"
	enotdir   = "Not a directory"
	stream    = "mkdir -p 0-1.0/backup && cd 0-1.0/backup"
)

// TestConfigfsTable covers every row of the configfs table in cuse-and-fuse.md §4.1, in
// its order, with the commands a user would type.
func TestConfigfsTable(t *testing.T) {
	runShellCases(t, []shellCase{
		// mkdir in a directory without make_group/make_item: EPERM.
		{name: "mkdir in an item", setup: stream, script: "mkdir 0-1.0/backup/sub", err: eperm},
		{name: "mkdir in thunderbolt", script: "mkdir ../usb", err: eperm},
		// mkdir directly under the configfs root: EPERM.
		{name: "mkdir in the configfs root", script: "mkdir ../../nvme", err: eperm},
		// make_group returning NULL: ENOMEM (see TestMakeReturnsNothing for the real NULL).
		// make_group returning an error: the driver's errno.
		{name: "mkdir bad group name", script: "mkdir backup", err: einval, check: hasGroups(map[string][]string{})},
		{name: "mkdir stream name of 9 bytes", setup: "mkdir 0-1.0", script: "mkdir 0-1.0/ninebytes", err: etoolong},
		{name: "mkdir stream name of 8 bytes", setup: "mkdir 0-1.0", script: "mkdir 0-1.0/eightbyt && ls 0-1.0", want: "eightbyt\n"},
		{name: "mkdir group refused by backend", fault: failOn(OpMakeGroup, syscall.EBUSY), script: "mkdir 0-1.0", err: ebusy},
		{name: "mkdir item refused by backend", setup: "mkdir 0-1.0", fault: failOn(OpMakeItem, syscall.ENOSPC), script: "mkdir 0-1.0/backup", err: enospc},
		// mkdir of an existing name: EEXIST.
		{name: "mkdir existing group", setup: "mkdir 0-1.0", script: "mkdir 0-1.0", err: eexist},
		{name: "mkdir existing item", setup: stream, script: "mkdir 0-1.0/backup", err: eexist},
		// rmdir of the subsystem or its default group: EPERM.
		{name: "rmdir stream", script: "cd .. && rmdir stream", err: eperm},
		{name: "rmdir thunderbolt", script: "cd ../.. && rmdir thunderbolt", err: eperm},
		// rmdir with dependents: EBUSY (here the backend refusing, the only way to have one).
		{name: "rmdir item with dependents", setup: stream, fault: failOn(OpRemoveItem, syscall.EBUSY),
			script: "rmdir 0-1.0/backup", err: ebusy, check: hasGroups(map[string][]string{"0-1.0": {"backup"}})},
		// rmdir of a group that still has items: ENOTEMPTY.
		{name: "rmdir group with items", setup: stream, script: "rmdir 0-1.0", err: enotempty},
		// rmdir of an item: its attributes go with it.
		{name: "rmdir item", setup: stream, script: "rmdir 0-1.0/backup && ls -A 0-1.0 && ! test -e 0-1.0/backup/index",
			check: hasGroups(map[string][]string{"0-1.0": {}})},
		// No create, unlink, rename, symlink (nor link, mknod).
		{name: "create a file", setup: stream, script: "touch 0-1.0/backup/new", err: eacces},
		{name: "create by redirection", setup: stream, script: "echo 8 > 0-1.0/notes", err: eacces},
		{name: "unlink an attribute", setup: stream, script: "rm -f 0-1.0/backup/index", err: eperm},
		{name: "rename an attribute", setup: stream, script: "mv 0-1.0/backup/index 0-1.0/backup/idx", err: eperm},
		{name: "rename a group", setup: stream, script: "mv 0-1.0 0-2.0", err: eperm},
		{name: "symlink", setup: stream, script: "ln -s backup 0-1.0/link", err: eperm},
		{name: "hard link", setup: stream, script: "ln 0-1.0/backup/index 0-1.0/backup/hard", err: eperm},
		{name: "mkfifo", setup: stream, script: "mkfifo 0-1.0/fifo", err: eperm},
		// Attribute read: show() once per open, later offsets from that snapshot.
		{name: "read serves one snapshot per open", setup: stream + " && echo 12 > in_hopid",
			script: "cd 0-1.0/backup && exec 3< in_hopid && dd bs=1 count=1 <&3 2>/dev/null && echo 15 > in_hopid && cat <&3 && cat in_hopid",
			want:   "12\n15\n"},
		// Attribute write: every write(2) is one store(), at any offset.
		{name: "append stores", setup: stream, script: "cd 0-1.0/backup && echo 9 >> in_hopid && cat in_hopid", want: "9\n"},
		{name: "each write stores", setup: stream,
			script: "cd 0-1.0/backup && exec 3> out_hopid && echo 8 >&3 && echo 10 >&3 && exec 3>&- && cat out_hopid", want: "10\n"},
		{name: "store error is the write's", setup: stream, script: "echo junk > 0-1.0/backup/in_hopid", err: einval},
		// O_TRUNC open: accepted, no store.
		{name: "truncating open stores nothing", setup: stream + " && echo 8 > in_hopid", fault: failOn(OpStore, syscall.EIO),
			script: ": > 0-1.0/backup/in_hopid && cat 0-1.0/backup/in_hopid", want: "8\n"},
		// i_size is PAGE_SIZE.
		{name: "attribute size", setup: stream, script: "stat -c '%s %A %U:%G %h %n' 0-1.0/backup/index 0-1.0/backup/in_hopid 0-1.0/backup 0-1.0",
			want: "4096 -r--r--r-- root:root 1 0-1.0/backup/index\n4096 -rw-r--r-- root:root 1 0-1.0/backup/in_hopid\n" +
				"0 drwxr-xr-x root:root 2 0-1.0/backup\n0 drwxr-xr-x root:root 3 0-1.0\n"},
		// Value parsing: kstrtoint base 0, one trailing newline; see TestAttributeValues.
		{name: "value with spaces", setup: stream, script: "echo ' 8' > 0-1.0/backup/in_hopid", err: einval},
	})
}

// TestMakeReturnsNothing: a make_group or make_item returning NULL fails mkdir with ENOMEM.
func TestMakeReturnsNothing(t *testing.T) {
	m := mountForTest(t, nothingBackend{})
	m.fails("mkdir 0-1.0", enomem)

	m = mountForTest(t, nothingBackend{group: true})
	m.ok("mkdir 0-1.0")
	m.fails("mkdir 0-1.0/backup", enomem)
}

// nothingBackend makes groups that make no items, or no groups at all.
type nothingBackend struct{ group bool }

func (b nothingBackend) MakeGroup(context.Context, GroupName) (Group, error) {
	if b.group {
		return b, nil
	}
	return nil, nil
}
func (nothingBackend) MakeItem(context.Context, string) (Item, error) { return nil, nil }
func (nothingBackend) Remove(context.Context) error                   { return nil }
