package stream

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"syscall"

	"tbstream/configfs"
	"tbstream/cuse"
	"tbstream/nhi"
	"tbstream/xdomain"
	"tbstream/xdomain/property"
	"tbstream/xdomain/xdp"
)

// Key and protocol of the service, as Linux registers them, but for
// PrtcStns.
const (
	Key      = "stream"
	PrtcID   = 1
	PrtcVers = 1
	PrtcRevs = 0
	// PrtcStns, the protocol settings, has StnsSessions set where Linux
	// has 0: a peer that announces it keeps session boundaries as the
	// package doc describes (it answers a CLOSE with its own).
	PrtcStns = StnsSessions
)

// StnsSessions is the protocol-settings bit of a peer that keeps session
// boundaries (see "Sessions" in the package doc). Linux's stream service
// sets no bit; thunderbolt-net negotiates its options with bits of the
// same field, from bit 0 up, so this one is the highest.
const StnsSessions = 1 << 31

// DirUUID is the UUID of the `stream` property directory.
var DirUUID = xdp.MustParseUUID("3a1cb984-c4d9-4469-a277-ce2fdfd11f0d")

// Attribute defaults (Linux 7.3).
const (
	DefaultRingSize   = 256
	DefaultThrottling = 8192
)

// Devices registers character device nodes. The daemon implements it with
// CUSE (/dev/tbstreamX) or the FUSE fallback.
type Devices interface {
	// Register creates node name (e.g. "tbstream0") served by dev.
	Register(name string, dev cuse.Device) (Node, error)
}

// Node is a registered device node. As a misc device at rmdir, its name
// goes away at once (Unlink) while open handles keep working; the device
// ends (Close) once the last handle is released.
type Node interface {
	Unlink()
	Close()
}

// DataPath is what the streams need below them: the NHI for rings and the
// control channel for DMA paths.
type DataPath struct {
	NHI     *nhi.NHI
	Control xdomain.ConfigAccess
}

// Config wires a Service.
type Config struct {
	Host    *xdomain.Host
	Data    DataPath
	Devices Devices
	Logger  *slog.Logger
}

// Service is the USB4STREAM service of one host. It is a configfs.Backend
// and an xdomain.ServiceDriver.
type Service struct {
	cfg Config
	log *slog.Logger

	// mu protects groups, remotes and shutdown. Lock order: see the
	// package doc.
	mu       sync.Mutex
	groups   map[string]*Group
	remotes  map[string]*xdomain.Service // bound remote services by name
	shutdown bool

	idxMu   sync.Mutex // a leaf lock
	indexes map[int]bool

	// lend is the WRITE buffers lent to the FUSE fallback's mount.
	lend lender
}

var (
	_ configfs.Backend      = (*Service)(nil)
	_ xdomain.ServiceDriver = (*Service)(nil)
	_ configfs.Group        = (*Group)(nil)
	_ configfs.Item         = (*Stream)(nil)
	_ cuse.Device           = (*Stream)(nil)
	_ cuse.Handle           = (*handle)(nil)
)

// New registers the `stream` directory in the host's property block and the
// service driver for the peers' `stream` services.
func New(cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{
		cfg:     cfg,
		log:     cfg.Logger,
		groups:  make(map[string]*Group),
		remotes: make(map[string]*xdomain.Service),
		indexes: make(map[int]bool),
		lend:    lender{size: mountLendBuffers, what: "the device mount"},
	}
	if err := cfg.Host.RegisterPropertyDir(Key, staticDir()); err != nil {
		return nil, fmt.Errorf("register stream properties: %w", err)
	}
	cfg.Host.RegisterDriver(Key, PrtcID, s)
	return s, nil
}

// staticDir is the `stream` directory every host publishes.
func staticDir() *property.Dir {
	d := property.NewDir(&DirUUID)
	// constant keys; cannot fail
	_ = d.AddValue("prtcid", PrtcID)
	_ = d.AddValue("prtcvers", PrtcVers)
	_ = d.AddValue("prtcrevs", PrtcRevs)
	_ = d.AddValue("prtcstns", PrtcStns)
	return d
}

// MakeGroup creates stream/<name>; it attaches at once when the peer's
// service is already there.
func (s *Service) MakeGroup(ctx context.Context, name configfs.GroupName) (configfs.Group, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return nil, syscall.ENODEV
	}
	if s.groups[name.Name] != nil {
		return nil, syscall.EEXIST
	}
	g := &Group{s: s, name: name.Name, items: make(map[string]*Stream)}
	s.groups[name.Name] = g
	if svc := s.remotes[name.Name]; svc != nil {
		g.attach(svc)
	}
	return g, nil
}

// Probe binds a peer's stream service: the group of the same name, if any,
// attaches its streams.
func (s *Service) Probe(svc *xdomain.Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := svc.ID.String()
	s.remotes[name] = svc
	if g := s.groups[name]; g != nil {
		g.attach(svc)
	}
	s.log.Info("stream service found", "service", name)
	return nil
}

// Changed re-reads the peer's announcements for streams that take their
// HopIDs from it.
func (s *Service) Changed(svc *xdomain.Service) {
	s.mu.Lock()
	g := s.groups[svc.ID.String()]
	s.mu.Unlock()
	if g != nil {
		g.remoteChanged(svc)
	}
}

// Remove detaches the group of a service that went away.
func (s *Service) Remove(svc *xdomain.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := svc.ID.String()
	if s.remotes[name] == svc {
		delete(s.remotes, name)
	}
	if g := s.groups[name]; g != nil {
		g.detach(svc)
	}
	s.log.Info("stream service gone", "service", name)
}

// retakeHopIDs gives every group's streams that take their HopIDs from
// the peer another try (see Group.retakeHopIDs).
func (s *Service) retakeHopIDs() {
	s.mu.Lock()
	groups := make([]*Group, 0, len(s.groups))
	for _, g := range s.groups {
		groups = append(groups, g)
	}
	s.mu.Unlock()
	for _, g := range groups {
		g.retakeHopIDs()
	}
}

// allocIndex returns the lowest free device index (Linux: a global IDA).
func (s *Service) allocIndex() int {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	i := 0
	for s.indexes[i] {
		i++
	}
	s.indexes[i] = true
	return i
}

func (s *Service) freeIndex(i int) {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	delete(s.indexes, i)
}

// GroupFor returns the group of that name, or nil.
func (s *Service) GroupFor(name string) *Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.groups[name]
}

// Snapshot describes every group and stream, for `tbstream list`.
func (s *Service) Snapshot() []GroupInfo {
	s.mu.Lock()
	groups := make([]*Group, 0, len(s.groups))
	for _, g := range s.groups {
		groups = append(groups, g)
	}
	s.mu.Unlock()
	infos := make([]GroupInfo, 0, len(groups))
	for _, g := range groups {
		infos = append(infos, g.info())
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos
}

// Shutdown closes every stream: open handles see the stream removed, nodes
// disappear, rings stop. Later mkdirs fail with ENODEV.
func (s *Service) Shutdown() {
	s.mu.Lock()
	s.shutdown = true
	groups := make([]*Group, 0, len(s.groups))
	for _, g := range s.groups {
		groups = append(groups, g)
	}
	s.mu.Unlock()
	for _, g := range groups {
		for _, st := range g.streams() {
			_ = st.Remove(context.Background())
		}
	}
}
