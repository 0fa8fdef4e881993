package cuse

// NewDirServer returns the server MountDir runs, on ch instead of a
// mounted /dev/fuse, and the Dir to Add and Remove its files; Init
// expects FUSE's INIT. For tests in which the fake kernel plays FUSE's
// side (package cuse/fakekernel imports cuse, so they are in cuse_test).
// The Dir is not mounted: only Add, Remove and Stats apply.
func NewDirServer(ch Channel, opts Options) (*Server, *Dir) {
	t := newTree()
	s := newServer(ch, opts, MaxFuseIO)
	s.fs = t
	return s, &Dir{srv: s, tree: t}
}
