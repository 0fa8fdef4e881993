// Command usbfake is a bad USB device for the VM suite
// (test/vm/usbbad.sh): a gadget with the cable's vendor and product IDs
// (1d6b:0104) but descriptors that are not the cable's, so that the USB
// host daemon finds a device that matches and must refuse it. Pure Go:
// configfs and FunctionFS like nhi/emu/usbcable/gadget, with descriptors
// of its own.
//
//	usbfake [-udc UDC] [-name NAME] KIND
//
// KIND is onebulk (one bulk IN endpoint, no OUT), interrupt (interrupt IN
// and OUT instead of bulk) or class (bulk IN and OUT in an interface of
// class 0xfe, application specific, instead of vendor 0xff). It binds the
// UDC, prints "usbfake: bound", answers ep0 until SIGTERM or SIGINT, then
// removes its gadget.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

const gadgetRoot = "/sys/kernel/config/usb_gadget"

// FunctionFS formats (include/uapi/linux/usb/functionfs.h) and USB
// descriptor values (USB 2.0 §9.6).
const (
	descriptorsMagicV2 = 3
	stringsMagic       = 2
	hasFS, hasHS       = 1, 2
	eventSize          = 12
	eventSetup         = 4
	attrBulk           = 2
	attrInterrupt      = 3
)

func iface(class uint8, endpoints int) []byte {
	return []byte{9, 4, 0, 0, byte(endpoints), class, 0, 0, 1}
}

func endpoint(addr, attr uint8, mps uint16, interval uint8) []byte {
	return []byte{7, 5, addr, attr, byte(mps), byte(mps >> 8), interval}
}

// descriptors returns the FS and HS descriptor lists of kind and their
// descriptor counts.
func descriptors(kind string) (fs, hs []byte, n int, err error) {
	switch kind {
	case "onebulk":
		fs = append(iface(0xff, 1), endpoint(0x81, attrBulk, 64, 0)...)
		hs = append(iface(0xff, 1), endpoint(0x81, attrBulk, 512, 0)...)
		return fs, hs, 2, nil
	case "interrupt":
		fs = append(append(iface(0xff, 2), endpoint(0x81, attrInterrupt, 64, 1)...), endpoint(0x02, attrInterrupt, 64, 1)...)
		hs = append(append(iface(0xff, 2), endpoint(0x81, attrInterrupt, 512, 4)...), endpoint(0x02, attrInterrupt, 512, 4)...)
		return fs, hs, 3, nil
	case "class":
		fs = append(append(iface(0xfe, 2), endpoint(0x81, attrBulk, 64, 0)...), endpoint(0x02, attrBulk, 64, 0)...)
		hs = append(append(iface(0xfe, 2), endpoint(0x81, attrBulk, 512, 0)...), endpoint(0x02, attrBulk, 512, 0)...)
		return fs, hs, 3, nil
	}
	return nil, nil, 0, fmt.Errorf("kind %q: want onebulk, interrupt or class", kind)
}

func descriptorsBlob(kind string) ([]byte, error) {
	fs, hs, n, err := descriptors(kind)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 20, 20+len(fs)+len(hs))
	binary.LittleEndian.PutUint32(b[0:], descriptorsMagicV2)
	binary.LittleEndian.PutUint32(b[4:], uint32(20+len(fs)+len(hs)))
	binary.LittleEndian.PutUint32(b[8:], hasFS|hasHS)
	binary.LittleEndian.PutUint32(b[12:], uint32(n))
	binary.LittleEndian.PutUint32(b[16:], uint32(n))
	return append(append(b, fs...), hs...), nil
}

func stringsBlob() []byte {
	const name = "not a tbstream cable"
	b := make([]byte, 16, 16+2+len(name)+1)
	b = binary.LittleEndian.AppendUint16(b, 0x0409)
	b = append(append(b, name...), 0)
	binary.LittleEndian.PutUint32(b[0:], stringsMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[8:], 1)
	binary.LittleEndian.PutUint32(b[12:], 1)
	return b
}

type gadget struct {
	dir, fn, mnt string
	ep0          int
}

func (g *gadget) make(kind, udc string) error {
	desc, err := descriptorsBlob(kind)
	if err != nil {
		return err
	}
	p := func(s ...string) string { return filepath.Join(append([]string{g.dir}, s...)...) }
	steps := []struct{ dir, file, value string }{
		{g.dir, "", ""},
		{"", p("idVendor"), "0x1d6b"},
		{"", p("idProduct"), "0x0104"},
		{p("strings", "0x409"), "", ""},
		{"", p("strings", "0x409", "product"), "usbfake " + kind},
		{p("configs", "c.1"), "", ""},
		{p("functions", g.fn), "", ""},
	}
	for _, s := range steps {
		if s.dir != "" {
			err = os.Mkdir(s.dir, 0o755)
		} else {
			err = os.WriteFile(s.file, []byte(s.value), 0)
		}
		if err != nil {
			return err
		}
	}
	if err := os.Symlink(p("functions", g.fn), p("configs", "c.1", g.fn)); err != nil {
		return err
	}
	if err := os.MkdirAll(g.mnt, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(filepath.Base(g.dir), g.mnt, "functionfs", 0, ""); err != nil {
		return fmt.Errorf("mount functionfs: %w", err)
	}
	if g.ep0, err = syscall.Open(filepath.Join(g.mnt, "ep0"), syscall.O_RDWR|syscall.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open ep0: %w", err)
	}
	if _, err := syscall.Write(g.ep0, desc); err != nil {
		return fmt.Errorf("ep0: descriptors: %w", err)
	}
	if _, err := syscall.Write(g.ep0, stringsBlob()); err != nil {
		return fmt.Errorf("ep0: strings: %w", err)
	}
	if err := os.WriteFile(p("UDC"), []byte(udc), 0); err != nil {
		return fmt.Errorf("bind %s: %w", udc, err)
	}
	return nil
}

// events reads ep0 and stalls control requests (none is expected).
func (g *gadget) events() {
	buf := make([]byte, 4*eventSize)
	for {
		n, err := syscall.Read(g.ep0, buf)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for b := buf[:n]; len(b) >= eventSize; b = b[eventSize:] {
			if b[8] == eventSetup {
				if b[0]&0x80 != 0 {
					syscall.Read(g.ep0, nil)
				} else {
					syscall.Write(g.ep0, nil)
				}
			}
		}
	}
}

// remove undoes make, ignoring what is not there.
func (g *gadget) remove() {
	os.WriteFile(filepath.Join(g.dir, "UDC"), []byte("\n"), 0)
	if g.ep0 >= 0 {
		syscall.Close(g.ep0)
	}
	syscall.Unmount(g.mnt, syscall.MNT_DETACH)
	for _, d := range []string{"configs/c.1/" + g.fn, "configs/c.1", "functions/" + g.fn, "strings/0x409", ""} {
		os.Remove(filepath.Join(g.dir, d))
	}
}

func main() {
	udc := flag.String("udc", "dummy_udc.0", "USB device controller to bind")
	name := flag.String("name", "tbstream-fake", "gadget directory and FunctionFS instance")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: usbfake [-udc UDC] [-name NAME] onebulk|interrupt|class")
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	g := &gadget{dir: filepath.Join(gadgetRoot, *name), fn: "ffs." + *name, mnt: "/tmp/" + *name + "-ffs", ep0: -1}
	if err := g.make(flag.Arg(0), *udc); err != nil {
		g.remove()
		fmt.Println("usbfake:", err)
		os.Exit(1)
	}
	fmt.Println("usbfake: bound", flag.Arg(0), "on", *udc)
	go g.events()
	<-sig
	g.remove()
	fmt.Println("usbfake: removed")
}
