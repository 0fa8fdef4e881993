package fakekernel

import (
	"context"
	"encoding/binary"
	"fmt"
	"syscall"

	"tbstream/cuse"
)

// Init sends CUSE_INIT and waits for a reply the kernel accepts.
func (k *Kernel) Init(ctx context.Context) (InitReply, error) {
	body := make([]byte, cuse.CuseInitInSize)
	le := binary.LittleEndian
	le.PutUint32(body[0:], k.cfg.Major)
	le.PutUint32(body[4:], k.cfg.Minor)
	le.PutUint32(body[12:], *k.cfg.Flags)
	c, err := k.Start(cuse.OpCuseInit, body, nil)
	if err != nil {
		return InitReply{}, err
	}
	r, err := c.Wait(ctx)
	if err != nil {
		return InitReply{}, err
	}
	if r.Errno != 0 {
		return InitReply{}, fmt.Errorf("CUSE_INIT: %w", r.Errno)
	}
	out, err := cuse.DecodeCuseInitOut(r.Body)
	if err != nil {
		return InitReply{}, err
	}
	info, err := cuse.ParseDevInfo(r.Body[cuse.CuseInitOutSize:])
	if err != nil {
		return InitReply{}, err
	}
	return InitReply{Out: out, DevInfo: info,
		MaxRead: max(int(out.MaxRead), cuse.MinMaxIO), MaxWrite: max(int(out.MaxWrite), cuse.MinMaxIO)}, nil
}

// call sends a request and waits for its reply.
func (k *Kernel) call(ctx context.Context, op uint32, body, payload []byte) (Reply, error) {
	c, err := k.Start(op, body, payload)
	if err != nil {
		return Reply{}, err
	}
	return c.Wait(ctx)
}

// Open sends OPEN and returns the fh.
func (k *Kernel) Open(ctx context.Context, flags uint32) (uint64, error) {
	body := make([]byte, cuse.OpenInSize)
	binary.LittleEndian.PutUint32(body, flags)
	r, err := k.call(ctx, cuse.OpOpen, body, nil)
	if err != nil {
		return 0, err
	}
	if r.Errno != 0 {
		return 0, r.Errno
	}
	if len(r.Body) != cuse.OpenOutSize {
		return 0, k.violation("OPEN reply body %d bytes, want %d", len(r.Body), cuse.OpenOutSize)
	}
	return binary.LittleEndian.Uint64(r.Body), nil
}

// ReadIn encodes fuse_read_in (fuse_write_in has the same layout) for the
// first request of a syscall.
func ReadIn(fh uint64, size int, flags uint32) []byte { return ReadInAt(fh, 0, size, flags) }

// ReadInAt encodes fuse_read_in at an offset: the kernel sends offsets
// counting from 0 within each read(2) or write(2) it splits.
func ReadInAt(fh uint64, offset uint64, size int, flags uint32) []byte {
	b := make([]byte, cuse.ReadInSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], fh)
	le.PutUint64(b[8:], offset)
	le.PutUint32(b[16:], uint32(size))
	le.PutUint32(b[32:], flags)
	return b
}

// StartRead sends READ without waiting.
func (k *Kernel) StartRead(fh uint64, size int, flags uint32) (*Call, error) {
	return k.Start(cuse.OpRead, ReadIn(fh, size, flags), nil)
}

// ReadReply interprets a READ reply.
func ReadReply(r Reply) ([]byte, error) {
	if r.Errno != 0 {
		return nil, r.Errno
	}
	return r.Body, nil
}

// Read sends READ and waits.
func (k *Kernel) Read(ctx context.Context, fh uint64, size int, flags uint32) ([]byte, error) {
	c, err := k.StartRead(fh, size, flags)
	if err != nil {
		return nil, err
	}
	r, err := c.Wait(ctx)
	if err != nil {
		return nil, err
	}
	if len(r.Body) > size {
		return nil, k.violation("READ of %d answered with %d bytes", size, len(r.Body))
	}
	return ReadReply(r)
}

// StartWrite sends WRITE without waiting.
func (k *Kernel) StartWrite(fh uint64, data []byte, flags uint32) (*Call, error) {
	return k.Start(cuse.OpWrite, ReadIn(fh, len(data), flags), data)
}

// WriteReply interprets a WRITE reply.
func WriteReply(r Reply) (int, error) {
	if r.Errno != 0 {
		return 0, r.Errno
	}
	if len(r.Body) != cuse.WriteOutSize {
		return 0, fmt.Errorf("WRITE reply body %d bytes, want %d", len(r.Body), cuse.WriteOutSize)
	}
	return int(binary.LittleEndian.Uint32(r.Body)), nil
}

// Write sends WRITE and waits.
func (k *Kernel) Write(ctx context.Context, fh uint64, data []byte, flags uint32) (int, error) {
	c, err := k.StartWrite(fh, data, flags)
	if err != nil {
		return 0, err
	}
	r, err := c.Wait(ctx)
	if err != nil {
		return 0, err
	}
	n, err := WriteReply(r)
	if err == nil && n > len(data) {
		return n, k.violation("WRITE of %d answered %d", len(data), n)
	}
	return n, err
}

// Poll sends POLL and returns revents.
func (k *Kernel) Poll(ctx context.Context, fh, kh uint64, flags, events uint32) (uint32, error) {
	b := make([]byte, cuse.PollInSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], fh)
	le.PutUint64(b[8:], kh)
	le.PutUint32(b[16:], flags)
	le.PutUint32(b[20:], events)
	r, err := k.call(ctx, cuse.OpPoll, b, nil)
	if err != nil {
		return 0, err
	}
	if r.Errno != 0 {
		return 0, r.Errno
	}
	if len(r.Body) != cuse.PollOutSize {
		return 0, k.violation("POLL reply body %d bytes, want %d", len(r.Body), cuse.PollOutSize)
	}
	return le.Uint32(r.Body), nil
}

// Ioctl sends IOCTL with cmd and returns the reply's errno.
func (k *Kernel) Ioctl(ctx context.Context, fh uint64, cmd uint32) error {
	b := make([]byte, cuse.IoctlInSize)
	binary.LittleEndian.PutUint64(b[0:], fh)
	binary.LittleEndian.PutUint32(b[12:], cmd)
	r, err := k.call(ctx, cuse.OpIoctl, b, nil)
	if err != nil {
		return err
	}
	if r.Errno != 0 {
		return r.Errno
	}
	return nil
}

// Release sends RELEASE and waits; CUSE's close(2) waits the same way.
func (k *Kernel) Release(ctx context.Context, fh uint64) error {
	b := make([]byte, cuse.ReleaseInSize)
	binary.LittleEndian.PutUint64(b[0:], fh)
	r, err := k.call(ctx, cuse.OpRelease, b, nil)
	if err != nil {
		return err
	}
	if r.Errno != 0 {
		return r.Errno
	}
	if len(r.Body) != 0 {
		return k.violation("RELEASE reply carries %d bytes", len(r.Body))
	}
	return nil
}

// Errno extracts the errno of an error returned by the helpers above.
func Errno(err error) syscall.Errno {
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return 0
}
