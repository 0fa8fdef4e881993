//go:build usb

// Command usbbench is the VM suite's baseline for the USB cable's
// throughput (test/vm/usb.sh): the same gadget (FunctionFS) and host
// (libusb) code and transfer sizes as the cable, moving bytes and nothing
// else — no cable framing, no emulated NHI, no CUSE.
//
//	usbbench gadget BYTES UDC VID:PID
//	                        make the gadget on UDC with those IDs, wait
//	                        for the host's start byte, write BYTES in
//	                        256 KiB writes (as emu's passes do), wait for
//	                        the host's end byte
//	usbbench host BYTES VID:PID
//	                        open the device, send the start byte, read
//	                        BYTES, print "VMBENCH usb-bare BYTES SECONDS"
//
// Other IDs and another UDC than the daemons' cable let it run while the
// daemons are up, in rounds between theirs.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"tbstream/nhi/emu/usbcable"
	"tbstream/nhi/emu/usbcable/gadget"
	"tbstream/nhi/emu/usbcable/usbhost"
)

const writeSize = 256 << 10

func main() {
	usage := func() {
		fmt.Fprintln(os.Stderr, "usage: usbbench gadget BYTES UDC VID:PID | host BYTES VID:PID")
		os.Exit(2)
	}
	if len(os.Args) < 4 {
		usage()
	}
	n, err := strconv.ParseInt(os.Args[2], 10, 64)
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "usbbench: BYTES:", os.Args[2])
		os.Exit(2)
	}
	id, err := usbcable.ParseID(os.Args[len(os.Args)-1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "usbbench:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	switch {
	case os.Args[1] == "gadget" && len(os.Args) == 5:
		err = gadgetSide(ctx, n, os.Args[3], id)
	case os.Args[1] == "host" && len(os.Args) == 4:
		err = hostSide(ctx, n, id)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "usbbench:", err)
		os.Exit(1)
	}
}

func gadgetSide(ctx context.Context, n int64, udc string, id usbcable.ID) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := gadget.Start(gadget.Config{Name: "tbbench", UDC: udc, ID: id, MountDir: "/tmp/usbbench-ffs", Logger: log})
	if err != nil {
		return err
	}
	defer g.Close()
	for {
		conn, err := g.Accept(ctx)
		if err != nil {
			return err
		}
		if err := conn.WaitData(ctx); err != nil {
			conn.Close()
			continue // a session the host reset: wait for the next
		}
		buf := make([]byte, writeSize)
		for left := n; left > 0; left -= writeSize {
			if _, err := conn.Write(buf[:min(left, writeSize)]); err != nil {
				return err
			}
		}
		// The start byte, then the host's end byte once it read all.
		conn.Read(make([]byte, 1))
		conn.Read(make([]byte, 1))
		conn.Close()
		return nil
	}
}

func hostSide(ctx context.Context, n int64, id usbcable.ID) error {
	var conn *usbcable.Conn
	var err error
	for ctx.Err() == nil {
		if conn, err = usbhost.Open(ctx, usbcable.Selector{ID: id}); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if conn == nil {
		return err
	}
	defer conn.Close()
	t0 := time.Now()
	if _, err := conn.Write([]byte{1}); err != nil {
		return err
	}
	buf := make([]byte, usbcable.MaxTransfer)
	var got int64
	for got < n {
		k, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", got, n, err)
		}
		got += int64(k)
	}
	dt := time.Since(t0)
	// Tell the gadget side it may go, and give the byte time to leave.
	conn.Write([]byte{2})
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("VMBENCH usb-bare %d %.3f\n", n, dt.Seconds())
	return nil
}
