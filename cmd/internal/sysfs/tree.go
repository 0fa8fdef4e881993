package sysfs

import (
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// kind is what an entry is.
type kind uint32

const (
	kindDir     kind = syscall.S_IFDIR
	kindFile    kind = syscall.S_IFREG
	kindSymlink kind = syscall.S_IFLNK
)

// entry is one directory, file or link of the view.
type entry struct {
	kind kind
	perm uint32            // permission bits of a file: 0444, 0200, 0600
	text string            // a file's content, a link's target
	sub  map[string]*entry // a directory's entries
}

func newDir() *entry { return &entry{kind: kindDir, sub: map[string]*entry{}} }

// file adds a readable file.
func (e *entry) file(name, text string) {
	e.sub[name] = &entry{kind: kindFile, perm: 0o444, text: text}
}

// writeOnly adds a file sysfs has no show method for (bind, uevent of a
// driver): mode 0200, reading it fails.
func (e *entry) writeOnly(name string) { e.sub[name] = &entry{kind: kindFile, perm: 0o200} }

func (e *entry) link(name, target string) { e.sub[name] = &entry{kind: kindSymlink, text: target} }

func (e *entry) dir(name string) *entry {
	if d, ok := e.sub[name]; ok && d.kind == kindDir {
		return d
	}
	d := newDir()
	e.sub[name] = d
	return d
}

// find walks path ("" is the root; elements separated by "/").
func (e *entry) find(path string) *entry {
	if path == "" {
		return e
	}
	for _, name := range strings.Split(path, "/") {
		if e.kind != kindDir {
			return nil
		}
		if e = e.sub[name]; e == nil {
			return nil
		}
	}
	return e
}

// names returns a directory's entries in order.
func (e *entry) names() []string {
	out := make([]string, 0, len(e.sub))
	for n := range e.sub {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Names of the view's objects, as Linux names the devices.
func domainName(domain uint32) string { return "domain" + strconv.FormatUint(uint64(domain), 10) }

// routerName is "%u-%llx" (tb_switch_alloc, tb_xdomain_alloc).
func routerName(domain uint32, route uint64) string {
	return strconv.FormatUint(uint64(domain), 10) + "-" + strconv.FormatUint(route, 16)
}

// serviceName is "%s.%d" (enumerate_services).
func serviceName(xd string, index uint32) string {
	return xd + "." + strconv.FormatUint(uint64(index), 10)
}

// Formats of Linux's show functions.

// hexAlt is the kernel's "%#x\n": 0 prints "0", not "0x0".
func hexAlt(v uint32) string {
	if v == 0 {
		return "0\n"
	}
	return fmt.Sprintf("%#x\n", v)
}

func decimal[T ~int | ~uint32](v T) string { return fmt.Sprintf("%d\n", v) }

// uuidB is "%pUb": the 16 bytes in order, lower-case, 8-4-4-4-12.
func uuidB(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// speed is "%u.0 Gb/s\n" (xdomain.c speed_show, switch.c speed_show).
func speed(gbps uint32) string { return fmt.Sprintf("%d.0 Gb/s\n", gbps) }

// escapeNP is "%*pE" (string_escape_mem with ESCAPE_ANY_NP): printable
// ASCII as is, the usual C escapes for \a \b \t \n \v \f \r \e and \0, any
// other byte as \ooo.
func escapeNP(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		case c == '\a':
			b.WriteString(`\a`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\v':
			b.WriteString(`\v`)
		case c == '\f':
			b.WriteString(`\f`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == 0x1b:
			b.WriteString(`\e`)
		case c == 0:
			b.WriteString(`\0`)
		default:
			fmt.Fprintf(&b, `\%03o`, c)
		}
	}
	return b.String()
}

// Modalias is get_modalias's "tbsvc:k%sp%08Xv%08Xr%08X", without the
// newline (the uevent's MODALIAS and the modalias file share it).
func Modalias(s Service) string {
	return fmt.Sprintf("tbsvc:k%sp%08Xv%08Xr%08X", s.Key, s.PrtcID, s.PrtcVers, s.PrtcRevs)
}

// optional adds a "%s\n" file when text is set (switch.c hides
// vendor_name and device_name otherwise).
func (e *entry) optional(name, text string) {
	if text != "" {
		e.file(name, text+"\n")
	}
}

func boolFile(b bool) string {
	if b {
		return "1\n"
	}
	return "0\n"
}

// build returns the whole view of s: the root holds bus/ and module/.
func build(s State) *entry {
	root := newDir()
	tb := root.dir("bus").dir("thunderbolt")
	devs := tb.dir("devices")
	drivers := tb.dir("drivers")
	tb.file("drivers_autoprobe", "1\n")
	tb.writeOnly("drivers_probe")
	tb.writeOnly("uevent")

	// domain.c domain_attrs: no boot_acl with the software CM.
	dom := devs.dir(domainName(s.Domain))
	dom.file("security", s.Security+"\n")
	dom.file("deauthorization", boolFile(s.Security == "user" || s.Security == "secure"))
	dom.file("iommu_dma_protection", boolFile(s.IOMMUDMAProtection))
	dom.file("uevent", "DEVTYPE=thunderbolt_domain\n")

	// switch.c switch_attrs of the host router (route 0: no boot, key,
	// rx_*/tx_*).
	r := s.Router
	rt := devs.dir(routerName(s.Domain, 0))
	if s.Security != "nopcie" && s.Security != "dponly" {
		rt.file("authorized", "1\n")
	}
	if r.DeviceID != 0 {
		rt.file("device", hexAlt(r.DeviceID))
	}
	rt.optional("device_name", r.DeviceName)
	rt.file("generation", decimal(r.Generation))
	rt.file("unique_id", uuidB(r.UUID)+"\n")
	if r.VendorID != 0 {
		rt.file("vendor", hexAlt(r.VendorID))
	}
	rt.optional("vendor_name", r.VendorName)
	uevent := "DEVTYPE=thunderbolt_device\nUSB4_TYPE=host\n"
	if r.USB4Version != "" {
		uevent += "USB4_VERSION=" + r.USB4Version + "\n"
	}
	rt.file("uevent", uevent)

	drv := drivers.dir(DriverName)
	drv.writeOnly("bind")
	drv.writeOnly("unbind")
	drv.writeOnly("uevent")
	drv.link("module", "../../../../module/"+DriverName)

	for _, x := range s.XDomains {
		// xdomain.c xdomain_attrs: all 0444, always present.
		name := routerName(s.Domain, x.Route)
		xd := devs.dir(name)
		xd.file("device", hexAlt(x.DeviceID))
		xd.file("device_name", x.DeviceName+"\n")
		xd.file("maxhopid", decimal(x.MaxHopID))
		xd.file("rx_lanes", decimal(x.Link.RxLanes))
		xd.file("rx_speed", speed(x.Link.RxSpeed))
		xd.file("tx_lanes", decimal(x.Link.TxLanes))
		xd.file("tx_speed", speed(x.Link.TxSpeed))
		xd.file("unique_id", uuidB(x.UUID)+"\n")
		xd.file("vendor", hexAlt(x.VendorID))
		xd.file("vendor_name", x.VendorName+"\n")
		xd.file("uevent", "DEVTYPE=thunderbolt_xdomain\n")
		for _, svc := range x.Services {
			// xdomain.c tb_service_attrs and tb_service_uevent.
			sname := serviceName(name, svc.Index)
			sd := devs.dir(sname)
			sd.file("key", escapeNP(svc.Key)+"\n")
			sd.file("modalias", Modalias(svc)+"\n")
			sd.file("prtcid", decimal(svc.PrtcID))
			sd.file("prtcvers", decimal(svc.PrtcVers))
			sd.file("prtcrevs", decimal(svc.PrtcRevs))
			sd.file("prtcstns", fmt.Sprintf("0x%08x\n", svc.PrtcStns))
			uevent := "DEVTYPE=thunderbolt_service\n"
			if svc.Bound {
				uevent += "DRIVER=" + DriverName + "\n"
				sd.link("driver", "../../drivers/"+DriverName)
				drv.link(sname, "../../devices/"+sname)
			}
			sd.file("uevent", uevent+"MODALIAS="+Modalias(svc)+"\n")
		}
	}

	// The module: standard driver-core entries (stream.c has no
	// module_param, so no parameters/).
	mod := root.dir("module").dir(DriverName)
	mod.file("initstate", "live\n")
	mod.file("refcnt", decimal(s.Refcnt))
	mod.file("taint", "\n")
	mod.writeOnly("uevent")
	mod.dir("holders")
	mod.dir("drivers").link("thunderbolt:"+DriverName, "../../../bus/thunderbolt/drivers/"+DriverName)
	return root
}

// Attributes returns what the view of s shows, for `tbstream list -json`:
// per directory (its path below /sys), every readable file's text less
// its final newline, and every link's target.
func Attributes(s State) map[string]map[string]string {
	out := map[string]map[string]string{}
	var walk func(path string, e *entry)
	walk = func(path string, e *entry) {
		for _, name := range e.names() {
			c := e.sub[name]
			switch {
			case c.kind == kindDir:
				walk(join(path, name), c)
			case c.kind == kindFile && c.perm&0o444 == 0:
			default:
				if out[path] == nil {
					out[path] = map[string]string{}
				}
				out[path][name] = strings.TrimSuffix(c.text, "\n")
			}
		}
	}
	walk("", build(s))
	return out
}
