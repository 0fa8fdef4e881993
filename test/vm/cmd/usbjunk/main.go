//go:build usb

// Command usbjunk is a bad USB host for the VM suite (test/vm/usb.sh):
// it opens the tbstream gadget as the host side does, sends garbage on
// the bulk OUT endpoint instead of a cable hello, and reports how the
// session ended. A gadget that follows the rules drops the garbage as a
// malformed frame and unplugs (rebinds its UDC), which ends the session
// here with the device gone.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"tbstream/nhi/emu/usbcable"
	"tbstream/nhi/emu/usbcable/usbhost"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conn *usbcable.Conn
	var err error
	for ctx.Err() == nil {
		if conn, err = usbhost.Open(ctx, usbcable.Selector{ID: usbcable.DefaultID}); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if conn == nil {
		fmt.Println("usbjunk: no device:", err)
		os.Exit(1)
	}
	junk := make([]byte, 4096)
	for i := range junk {
		junk[i] = byte(i*37 + 11)
	}
	if _, err := conn.Write(junk); err != nil {
		fmt.Println("usbjunk: write:", err)
		os.Exit(1)
	}
	buf := make([]byte, 64<<10)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, err := conn.Read(buf)
		if err != nil {
			fmt.Println("usbjunk: session ended:", err)
			conn.Close()
			return
		}
	}
}
