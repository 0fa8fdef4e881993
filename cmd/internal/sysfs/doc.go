// Package sysfs is the read-only view of /sys/bus/thunderbolt and
// /sys/module/thunderbolt_stream that `tbstream shell` shows for one host,
// so that programs written for the kernel driver discover services and the
// peer before they configure a stream. It owns the tree (which directories,
// files and links exist for a State), the text of every file as Linux's
// code prints it (switch.c, domain.c, xdomain.c, stream.c; where the ABI
// document and the code disagree, as on modalias's "tbsvc:" prefix, the
// code), and the go-fuse mount that serves it.
//
// The view is generated from a Source at every lookup, directory read and
// open, with nothing cached by the kernel, so entries appear and disappear
// with plug, unplug and property changes as on Linux.
//
//	bus/thunderbolt/
//	  devices/domain0/          security deauthorization iommu_dma_protection uevent
//	  devices/0-0/              device device_name generation unique_id vendor vendor_name uevent
//	  devices/<d>-<route>/      XDomain: device device_name maxhopid rx_lanes rx_speed
//	                            tx_lanes tx_speed unique_id vendor vendor_name uevent
//	  devices/<xd>.<n>/         service: key modalias prtcid prtcrevs prtcstns prtcvers
//	                            uevent, driver -> ../../drivers/thunderbolt_stream if bound
//	  drivers/thunderbolt_stream/  bind unbind uevent, module, one link per bound service
//	  drivers_autoprobe drivers_probe uevent
//	module/thunderbolt_stream/  initstate refcnt taint uevent holders/
//	                            drivers/thunderbolt:thunderbolt_stream
//
// Unlike sysfs, the entries of devices/ are directories, not links into
// /sys/devices (the view has no PCI hierarchy to link into), so the links
// that lead from them are relative to devices/.
//
// It knows nothing of XDomain discovery, streams, NHIs or the daemon: the
// daemon fills a State from its live objects. It must not import any
// tbstream package.
package sysfs
