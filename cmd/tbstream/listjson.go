package main

import (
	"encoding/json"
	"fmt"
	"io"

	"tbstream/cmd/internal/daemon"
	"tbstream/nhi/emu"
)

// The document `tbstream list -json` prints: what `list` shows, the sysfs
// view's files and every counter, for monitoring tools.
type (
	listJSON struct {
		Hosts []hostJSON `json:"hosts"`
	}
	hostJSON struct {
		Name  string `json:"name"`
		Error string `json:"error,omitempty"` // why the host has nothing else
		// Devices is "cuse" or "fuse"; DeviceDir where tbstreamN are.
		Devices   string `json:"devices,omitempty"`
		DeviceDir string `json:"device_dir,omitempty"`
		// Sysfs is the sysfs view: per directory below /sys (as
		// "bus/thunderbolt/devices/0-1"), each file's text less its final
		// newline, each link's target.
		Sysfs    map[string]map[string]string `json:"sysfs,omitempty"`
		XDomains []xdomainJSON                `json:"xdomains"`
		Groups   []groupJSON                  `json:"groups"`
		Process  *daemon.Process              `json:"process,omitempty"`
		// Fabric: the emulated NHI's dropped frames, per reason.
		Fabric *emu.Counters `json:"fabric,omitempty"`
	}
	xdomainJSON struct {
		Name       string        `json:"name"`
		State      string        `json:"state"`
		UniqueID   string        `json:"unique_id"`
		VendorID   uint32        `json:"vendor"`
		DeviceID   uint32        `json:"device"`
		VendorName string        `json:"vendor_name"`
		DeviceName string        `json:"device_name"`
		MaxHopID   int           `json:"maxhopid"`
		Generation uint32        `json:"generation"`
		Requests   uint64        `json:"requests"`
		Responses  uint64        `json:"responses"`
		Dropped    uint64        `json:"dropped"`
		Services   []serviceJSON `json:"services"`
	}
	serviceJSON struct {
		Name   string `json:"name"`
		Key    string `json:"key"`
		PrtcID uint32 `json:"prtcid"`
	}
	groupJSON struct {
		Name     string       `json:"name"`
		Attached bool         `json:"attached"`
		Streams  []streamJSON `json:"streams"`
	}
	streamJSON struct {
		Name       string `json:"name"`
		Index      int    `json:"index"`
		Device     string `json:"device"`
		InHopID    int    `json:"in_hopid"`
		OutHopID   int    `json:"out_hopid"`
		RingSize   int    `json:"ring_size"`
		Throttling uint32 `json:"throttling"`
		BusyPoll   bool   `json:"busy_poll"`
		State      string `json:"state"`
		Open       int    `json:"open"`
		TxBytes    uint64 `json:"tx_bytes"`
		TxFrames   uint64 `json:"tx_frames"`
		// TxLentBytes: bytes of tx_bytes posted from the buffers lent to
		// the CUSE server, with no copy in user space.
		TxLentBytes   uint64 `json:"tx_lent_bytes"`
		RxBytes       uint64 `json:"rx_bytes"`
		RxFrames      uint64 `json:"rx_frames"`
		RxFrameErrors uint64 `json:"rx_frame_errors"`
		// Undelivered: bytes write(2) queued that no reader of their
		// session got (discarded when the peer's session ended first, or
		// left by the last close).
		Undelivered uint64 `json:"undelivered"`
		// RxDiscarded: bytes that arrived for a session whose reader had
		// gone, thrown away rather than given to a later one.
		RxDiscarded uint64 `json:"rx_discarded"`
	}
)

// listJSONOf turns a daemon's status into its host's part of the document.
func listJSONOf(st daemon.Status) hostJSON {
	h := hostJSON{Name: st.Name, Devices: st.Devices, DeviceDir: st.DeviceDir, Sysfs: st.Sysfs,
		XDomains: []xdomainJSON{}, Groups: []groupJSON{}, Process: &st.Process, Fabric: st.Fabric}
	for _, p := range st.Peers {
		x := xdomainJSON{
			Name: p.ID.String(), State: p.State.String(), UniqueID: p.RemoteUUID.String(),
			VendorID: p.VendorID, DeviceID: p.DeviceID, VendorName: p.VendorName, DeviceName: p.DeviceName,
			MaxHopID: p.MaxHopID, Generation: p.Generation,
			Requests: p.Stats.Requests, Responses: p.Stats.Responses, Dropped: p.Stats.Dropped,
			Services: []serviceJSON{},
		}
		for _, s := range p.Services {
			x.Services = append(x.Services, serviceJSON{Name: s.Name, Key: s.Key, PrtcID: s.PrtcID})
		}
		h.XDomains = append(h.XDomains, x)
	}
	for _, g := range st.Groups {
		gj := groupJSON{Name: g.Name, Attached: g.Attached, Streams: []streamJSON{}}
		for _, s := range g.Streams {
			gj.Streams = append(gj.Streams, streamJSON{
				Name: s.Name, Index: s.Index, Device: s.Device, InHopID: s.InHopID, OutHopID: s.OutHopID,
				RingSize: s.RingSize, Throttling: s.Throttling, BusyPoll: s.BusyPoll, State: s.State, Open: s.Users,
				TxBytes: s.TxBytes, TxFrames: s.TxFrames, TxLentBytes: s.TxLentBytes, RxBytes: s.RxBytes, RxFrames: s.RxFrames,
				RxFrameErrors: s.RxFrameErrors, Undelivered: s.Undelivered, RxDiscarded: s.RxDiscarded,
			})
		}
		h.Groups = append(h.Groups, gj)
	}
	return h
}

// listJSONTo prints the hosts of the run root as one JSON document. A
// host whose daemon does not run or answer gets only its name and error,
// and listJSONTo fails, as list does.
func listJSONTo(w io.Writer, run string, hosts []string) error {
	doc := listJSON{Hosts: []hostJSON{}}
	failed := false
	for _, name := range hosts {
		st, why := hostStatus(run, name)
		if why != "" {
			doc.Hosts = append(doc.Hosts, hostJSON{Name: name, Error: why})
			failed = true
			continue
		}
		h := listJSONOf(st)
		h.Name = name
		doc.Hosts = append(doc.Hosts, h)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("list -json: %w", err)
	}
	if failed {
		return errReported
	}
	return nil
}
