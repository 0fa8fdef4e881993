package stream

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"

	"tbstream/configfs"
	"tbstream/xdomain"
	"tbstream/xdomain/property"
)

// Group is stream/<domain>-<route>.<service>: the streams to one peer. It
// may exist before the peer does and attaches when a service of the same
// name is probed.
type Group struct {
	s    *Service
	name string

	mu    sync.Mutex       // protects svc and items; after Service.mu, before Stream.mu
	svc   *xdomain.Service // nil while detached
	items map[string]*Stream
}

// MakeItem creates a stream: it takes the lowest free index, registers
// /dev/tbstream<index> and attaches if the group is attached.
func (g *Group) MakeItem(ctx context.Context, name string) (configfs.Item, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.items[name] != nil {
		return nil, syscall.EEXIST
	}
	st := newStream(g, name, g.s.allocIndex())
	node, err := g.s.cfg.Devices.Register(st.DeviceName(), st)
	if err != nil {
		g.s.freeIndex(st.index)
		g.s.log.Error("cannot register device node", "node", st.DeviceName(), "err", err)
		return nil, fmt.Errorf("register %s: %w", st.DeviceName(), err)
	}
	st.node = node
	go st.notifier() // until the stream is finished
	g.items[name] = st
	if g.svc != nil {
		st.attach(g.svc)
		g.announceLocked()
	}
	return st, nil
}

// Remove deletes the group; configfs has checked it holds no streams.
func (g *Group) Remove(ctx context.Context) error {
	g.s.mu.Lock()
	defer g.s.mu.Unlock()
	g.mu.Lock()
	n := len(g.items)
	g.mu.Unlock()
	if n > 0 {
		return syscall.ENOTEMPTY
	}
	if g.s.groups[g.name] == g {
		delete(g.s.groups, g.name)
	}
	return nil
}

func (g *Group) streams() []*Stream {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*Stream, 0, len(g.items))
	for _, st := range g.items {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out
}

// forget drops a removed stream from the group.
func (g *Group) forget(st *Stream) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.items[st.name] == st {
		delete(g.items, st.name)
	}
	g.announceLocked()
}

func (g *Group) attach(svc *xdomain.Service) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.svc = svc
	for _, st := range g.items {
		st.attach(svc)
	}
	g.announceLocked()
}

func (g *Group) detach(svc *xdomain.Service) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.svc != svc {
		return
	}
	for _, st := range g.items {
		st.detach()
	}
	g.svc = nil
	svc.SetLocalProperties(nil)
}

func (g *Group) remoteChanged(svc *xdomain.Service) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.svc != svc {
		return
	}
	remote := svc.RemoteProperties()
	changed := false
	for _, st := range g.items {
		if st.takeRemoteHopIDs(remote) {
			changed = true
		}
	}
	if changed {
		g.announceLocked()
	}
}

// retakeHopIDs gives the streams that take their HopIDs from the peer's
// announcement another try, after a removed stream freed its own: the
// allocation may have failed while they were still taken.
func (g *Group) retakeHopIDs() {
	g.mu.Lock()
	svc := g.svc
	g.mu.Unlock()
	if svc != nil {
		g.remoteChanged(svc)
	}
}

// announce publishes the group's streams after a HopID change.
func (g *Group) announce() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.announceLocked()
}

// announceLocked rebuilds the per-peer `stream` directory from the streams
// that have both HopIDs (≥ 8), as service_update_properties does stream by
// stream, and tells the peer if anything changed.
func (g *Group) announceLocked() {
	if g.svc == nil {
		return
	}
	dir := staticDir()
	entries := 0
	for _, st := range g.sortedLocked() {
		sub := st.announcement()
		if sub == nil {
			continue
		}
		if err := dir.AddDir(st.name, sub); err != nil {
			g.s.log.Error("cannot announce stream", "stream", st.name, "err", err)
			continue
		}
		entries++
	}
	if entries == 0 {
		dir = nil // Linux frees local_properties when no directory remains
	}
	if sameDir(g.svc.LocalProperties(), dir) {
		return
	}
	g.svc.SetLocalProperties(dir)
	g.svc.PropertiesChanged()
}

func (g *Group) sortedLocked() []*Stream {
	out := make([]*Stream, 0, len(g.items))
	for _, st := range g.items {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out
}

func sameDir(a, b *property.Dir) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	ba, err1 := wrap(a).Format()
	bb, err2 := wrap(b).Format()
	if err1 != nil || err2 != nil || len(ba) != len(bb) {
		return false
	}
	for i := range ba {
		if ba[i] != bb[i] {
			return false
		}
	}
	return true
}

// wrap puts a service directory in a root so that it can be formatted.
func wrap(d *property.Dir) *property.Dir {
	root := property.NewDir(nil)
	_ = root.AddDir(Key, d)
	return root
}

// GroupInfo describes a group for `tbstream list`.
type GroupInfo struct {
	Name     string
	Attached bool
	Streams  []Info
}

func (g *Group) info() GroupInfo {
	g.mu.Lock()
	attached := g.svc != nil
	g.mu.Unlock()
	gi := GroupInfo{Name: g.name, Attached: attached}
	for _, st := range g.streams() {
		gi.Streams = append(gi.Streams, st.Info())
	}
	return gi
}
