package cuse_test

import (
	"context"
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"tbstream/cuse"
	"tbstream/cuse/fakekernel"
	"tbstream/cuse/loopback"
)

// FuzzServe sends arbitrary messages, as a broken kernel could, to a live
// server: it must neither panic nor stop answering well-formed requests.
func FuzzServe(f *testing.F) {
	msg := func(op uint32, unique uint64, body []byte) []byte {
		b := make([]byte, cuse.InHeaderSize+len(body))
		binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
		binary.LittleEndian.PutUint32(b[4:], op)
		binary.LittleEndian.PutUint64(b[8:], unique)
		copy(b[cuse.InHeaderSize:], body)
		return b
	}
	f.Add(msg(cuse.OpRead, 1001, fakekernel.ReadIn(1, 10, syscall.O_NONBLOCK)))
	f.Add(msg(cuse.OpWrite, 1003, append(fakekernel.ReadInAt(1, 0, 3, 0)[:cuse.WriteInSize], 'a', 'b', 'c')))
	f.Add(msg(cuse.OpPoll, 1005, make([]byte, cuse.PollInSize)))
	f.Add(msg(cuse.OpInterrupt, 1007, make([]byte, 8)))
	f.Add(msg(cuse.OpRelease, 1009, make([]byte, cuse.ReleaseInSize)))
	f.Add(msg(cuse.OpCuseInit, 1011, make([]byte, cuse.CuseInitInSize)))
	f.Add(msg(cuse.OpIoctl, 1013, make([]byte, cuse.IoctlInSize)))
	f.Add([]byte{0})

	dir := f.TempDir()
	k, err := fakekernel.New(fakekernel.Config{DevDir: dir})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := cuse.NewServer(k.Channel(), loopback.New(1<<16), cuse.Options{Name: "tbstream0",
		Node: cuse.NodeOptions{Dir: dir, SysClass: dir}})
	if err != nil {
		f.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	f.Cleanup(func() {
		srv.Close()
		k.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	if _, err := k.Init(ctx); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, raw []byte) {
		if err := k.SendRaw(raw); err != nil {
			return // empty or oversized: the socket refuses, as /dev/cuse would never send it
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fh, err := k.Open(ctx, syscall.O_RDWR)
		if err != nil && fakekernel.Errno(err) == 0 {
			select {
			case err := <-served:
				t.Fatalf("server stopped: %v", err)
			default:
			}
			t.Fatalf("server stopped answering: %v", err)
		}
		if err == nil {
			k.Release(ctx, fh)
		}
	})
}
