package sysfs

// Source gives the host's state as the view shows it. State is called for
// every lookup, directory read and open, from go-fuse's goroutines, so it
// must be safe for concurrent use and must not block on I/O.
type Source interface {
	State() State
}

// State is a snapshot of what the view shows.
type State struct {
	// Domain is the domain index ("domain0", "0-0").
	Domain uint32
	// Security is domain0/security: "none", "user", "secure", "dponly",
	// "usbonly" or "nopcie". Routers have no authorized file with
	// "nopcie" or "dponly".
	Security string
	// IOMMUDMAProtection is domain0/iommu_dma_protection.
	IOMMUDMAProtection bool
	Router             Router
	XDomains           []XDomain
	// Refcnt is the module's reference count: on Linux every open
	// /dev/tbstreamN and every configfs directory holds the module.
	Refcnt int
}

// Router is the host router, "<domain>-0".
type Router struct {
	VendorID, DeviceID     uint32
	VendorName, DeviceName string // "" hides the file, as Linux does
	UUID                   [16]byte
	Generation             uint32 // 1..4
	// USB4Version is the uevent's USB4_VERSION ("1.0"); "" for a
	// Thunderbolt 1-3 router.
	USB4Version string
}

// XDomain is a remote host, named "<domain>-<route>".
type XDomain struct {
	Route                  uint64
	VendorID, DeviceID     uint32
	VendorName, DeviceName string
	UUID                   [16]byte
	MaxHopID               int
	Link                   Link
	Services               []Service
}

// Link is the lane link toward an XDomain: speed per lane in Gb/s (10, 20
// or 40) and lanes per direction (1, 2, or 3 for an asymmetric link).
type Link struct {
	RxSpeed, TxSpeed uint32
	RxLanes, TxLanes uint32
}

// Service is one of an XDomain's services, "<xdomain>.<index>".
type Service struct {
	Index                                uint32
	Key                                  string
	PrtcID, PrtcVers, PrtcRevs, PrtcStns uint32
	// Bound says the thunderbolt_stream driver serves it.
	Bound bool
}

// DriverName is the stream driver's name, which is also its module's.
const DriverName = "thunderbolt_stream"
