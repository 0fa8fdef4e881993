package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"tbstream/cmd/internal/sysfs"
	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/xdomain"
)

// SysDir is the sysfs view's mount: <run>/sys/bus/thunderbolt and
// <run>/sys/module/thunderbolt_stream, which `tbstream shell` binds over
// /sys.
func SysDir(run string) string { return filepath.Join(run, "sys") }

// What the view says about the link and the domain, where the emulated
// fabric has nothing to read it from.
const (
	// The emulated cable does not model lane bonding or a link rate:
	// one lane each way at USB4 Gen 3's 20 Gb/s per lane, which Linux
	// shows for an unbonded Gen 3 link.
	emulatedLaneSpeed = 20
	emulatedLanes     = 1
	// tbstream tunnels no PCIe: Linux's software CM says "nopcie" where
	// PCIe tunnelling is not allowed.
	securityLevel = "nopcie"
	usb4Version   = "1.0"
	usb4Gen       = 4
)

// sysfsSource is the daemon's live state as the view reads it.
type sysfsSource struct {
	d      *Daemon
	router sysfs.Router // read once: the host router does not change
}

// mountSysfs reads the host router's identity and mounts the view on
// SysDir.
func (d *Daemon) mountSysfs(ctx context.Context) error {
	src := &sysfsSource{d: d}
	rctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	w, err := d.host.Control.ReadConfig(rctx, 0, ctl.SpaceRouter, 0, nhi.RouterCS0, 1)
	if err != nil {
		return fmt.Errorf("sysfs view: read the host router's ids: %w", err)
	}
	src.router = sysfs.Router{
		VendorID: w[0] & 0xffff, DeviceID: w[0] >> 16,
		// The emulated router has no DROM to name it: it is named as
		// this host names itself to peers.
		VendorName: xdomain.LinuxVendorName, DeviceName: d.opts.Name,
		UUID:       d.host.XDomain.UUID(),
		Generation: usb4Gen, USB4Version: usb4Version,
	}
	dir, err := makeSubdir(d.opts.RunDir, filepath.Base(SysDir(d.opts.RunDir)))
	if err != nil {
		return fmt.Errorf("sysfs view: %w", err)
	}
	d.sysfs, err = sysfs.Mount(ctx, dir, src, sysfs.Options{Logger: d.log})
	return err
}

// controlTimeout bounds one config read of the host router.
const controlTimeout = 2 * time.Second

func (s *sysfsSource) State() sysfs.State {
	d := s.d
	st := sysfs.State{
		Security:           securityLevel,
		IOMMUDMAProtection: d.opts.VFIO != "", // VFIO refuses to run without an IOMMU
		Router:             s.router,
	}
	// On Linux configfs pins the module for every directory made under
	// it, and every open misc device holds it too.
	for _, g := range d.host.Streams.Snapshot() {
		st.Refcnt++
		for _, si := range g.Streams {
			st.Refcnt += 1 + si.Users
		}
	}
	for _, xd := range d.host.XDomain.XDomains() {
		info := xd.Info()
		// Linux adds the XDomain device after its first properties
		// read, and keeps it through re-reads until the unplug.
		if !info.Added || info.State == xdomain.StateRemoved {
			continue
		}
		x := sysfs.XDomain{
			Route:    uint64(info.ID.Route),
			VendorID: info.VendorID, DeviceID: info.DeviceID,
			VendorName: info.VendorName, DeviceName: info.DeviceName,
			UUID:     info.RemoteUUID,
			MaxHopID: info.MaxHopID,
			Link:     sysfs.Link{RxSpeed: emulatedLaneSpeed, TxSpeed: emulatedLaneSpeed, RxLanes: emulatedLanes, TxLanes: emulatedLanes},
		}
		for _, svc := range xd.Services() {
			x.Services = append(x.Services, sysfs.Service{
				Index: svc.ID.Index, Key: svc.Key,
				PrtcID: svc.PrtcID, PrtcVers: svc.PrtcVers, PrtcRevs: svc.PrtcRevs, PrtcStns: svc.PrtcStns,
				Bound: svc.Bound(),
			})
		}
		st.XDomains = append(st.XDomains, x)
	}
	sort.Slice(st.XDomains, func(i, j int) bool { return st.XDomains[i].Route < st.XDomains[j].Route })
	return st
}
