package xdomain

import (
	"cmp"
	"slices"
	"sync"

	"tbstream/xdomain/property"
)

// ServiceDriver serves remote services of one key and protocol id, as a
// Linux tb_service_driver. Callbacks run on the peer's discovery goroutine,
// one at a time per peer; they must not block on that peer's discovery.
type ServiceDriver interface {
	// Probe binds the driver to a new service; an error leaves it unbound.
	Probe(svc *Service) error
	// Changed reports that the peer's properties were re-read and
	// svc.RemoteProperties may differ.
	Changed(svc *Service)
	// Remove unbinds: the directory disappeared or the peer is gone.
	Remove(svc *Service)
}

// Service is one directory of a peer's property block, as Linux's struct
// tb_service, named "<xdomain>.<index>".
type Service struct {
	ID  ServiceID
	Key string
	// The protocol immediates of the directory (0 when absent).
	PrtcID, PrtcVers, PrtcRevs, PrtcStns uint32

	xd *XDomain

	mu     sync.Mutex
	remote *property.Dir
	local  *property.Dir
	driver ServiceDriver
}

// XDomain returns the peer the service belongs to.
func (s *Service) XDomain() *XDomain { return s.xd }

// RemoteProperties returns a copy of the peer's directory for this service,
// as last read.
func (s *Service) RemoteProperties() *property.Dir {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remote.Copy()
}

// Bound reports whether a service driver serves s (Linux: the device has a
// driver, the sysfs driver link exists).
func (s *Service) Bound() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.driver != nil
}

// LocalProperties returns a copy of what this host adds to its own
// directory of the same key for this peer only, or nil.
func (s *Service) LocalProperties() *property.Dir {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.local == nil {
		return nil
	}
	return s.local.Copy()
}

// SetLocalProperties replaces the per-peer properties merged into our
// block (nil removes them). Call PropertiesChanged to tell the peer.
func (s *Service) SetLocalProperties(d *property.Dir) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d != nil {
		d = d.Copy()
	}
	s.local = d
}

// PropertiesChanged bumps our block's generation and, shortly after,
// sends the peer PROPERTIES_CHANGED (tb_service_properties_changed). It does
// nothing once the peer is unplugged.
func (s *Service) PropertiesChanged() {
	if s.xd.Unplugged() {
		return
	}
	s.xd.host.bumpGeneration()
	s.xd.notifyChanged()
}

func (s *Service) unbind() {
	s.mu.Lock()
	drv := s.driver
	s.driver = nil
	s.mu.Unlock()
	if drv != nil {
		drv.Remove(s)
	}
}

func (s *Service) bind() {
	drv := s.xd.host.driverFor(s)
	if drv == nil {
		return
	}
	s.mu.Lock()
	bound := s.driver != nil
	s.mu.Unlock()
	if bound {
		return
	}
	if err := drv.Probe(s); err != nil {
		s.xd.host.log.Warn("xdomain: service driver refused", "service", s.ID, "key", s.Key, "err", err)
		return
	}
	s.mu.Lock()
	s.driver = drv
	s.mu.Unlock()
}

func immediate(d *property.Dir, key string) uint32 {
	if p := d.Find(key, property.Value); p != nil {
		return p.Value
	}
	return 0
}

// enumerateServices makes the service list match the directories of the
// peer's root (enumerate_services): services whose directory disappeared
// are removed, existing ones get the new directory and a Changed call, new
// ones take the lowest free index and are probed.
func (xd *XDomain) enumerateServices(root *property.Dir) {
	dirs := map[string]*property.Dir{}
	for _, p := range root.Properties {
		if p.Type == property.Directory {
			dirs[p.Key] = p.Dir
		}
	}

	xd.mu.Lock()
	var removed, changed, added []*Service
	kept := xd.services[:0]
	for _, svc := range xd.services {
		if dirs[svc.Key] == nil {
			removed = append(removed, svc)
			delete(xd.serviceIDs, svc.ID.Index)
			continue
		}
		kept = append(kept, svc)
	}
	xd.services = kept
	for _, p := range root.Properties {
		if p.Type != property.Directory {
			continue
		}
		var svc *Service
		for _, s := range xd.services {
			if s.Key == p.Key {
				svc = s
			}
		}
		if svc == nil {
			idx := uint32(0)
			for xd.serviceIDs[idx] {
				idx++
			}
			xd.serviceIDs[idx] = true
			// As Linux, the protocol immediates are read once, when
			// the service appears; they identify the driver.
			svc = &Service{
				ID: ServiceID{Host: xd.ID, Index: idx}, Key: p.Key, xd: xd,
				PrtcID: immediate(p.Dir, "prtcid"), PrtcVers: immediate(p.Dir, "prtcvers"),
				PrtcRevs: immediate(p.Dir, "prtcrevs"), PrtcStns: immediate(p.Dir, "prtcstns"),
			}
			xd.services = append(xd.services, svc)
			added = append(added, svc)
		} else {
			changed = append(changed, svc)
		}
		svc.mu.Lock()
		svc.remote = p.Dir.Copy()
		svc.mu.Unlock()
	}
	slices.SortFunc(xd.services, func(a, b *Service) int { return cmp.Compare(a.ID.Index, b.ID.Index) })
	xd.mu.Unlock()

	for _, svc := range removed {
		svc.unbind()
	}
	for _, svc := range changed {
		svc.mu.Lock()
		drv := svc.driver
		svc.mu.Unlock()
		if drv != nil {
			drv.Changed(svc)
		} else {
			svc.bind()
		}
	}
	for _, svc := range added {
		svc.bind()
	}
}

// probeUnbound offers services without a driver to newly registered
// ones, on the discovery goroutine.
func (xd *XDomain) probeUnbound() {
	select {
	case xd.probe <- struct{}{}:
	default:
	}
}
