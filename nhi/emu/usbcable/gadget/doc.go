// Package gadget is the device end of a USB cable (package usbcable): a
// USB gadget made through the kernel's gadget configfs, its one function
// served through FunctionFS, in pure Go.
//
// Start makes the gadget (removing a stale one a crashed daemon left),
// mounts FunctionFS, writes the descriptors and strings to ep0 and binds
// the UDC; Accept waits for the host to enable the function and returns
// the session's bulk pipe as a usbcable.Conn; Close removes everything.
//
// It does not know the cable framing, and it never unloads modules.
//
// # configfs (Documentation/usb/gadget_configfs.rst)
//
//	/sys/kernel/config/usb_gadget/<name>/
//	  idVendor idProduct bcdDevice=0x0100 bcdUSB=0x0200
//	  strings/0x409/{manufacturer,product,serialnumber}
//	  configs/c.1/{MaxPower=120, strings/0x409/configuration}
//	  functions/ffs.<name>        linked into configs/c.1/
//	  UDC                         written last, once ep0 has the descriptors
//
// # FunctionFS ep0 (include/uapi/linux/usb/functionfs.h)
//
// Descriptors, FUNCTIONFS_DESCRIPTORS_MAGIC_V2, little-endian:
//
//	offset size field
//	0      4    magic = 3
//	4      4    length of the whole blob
//	8      4    flags = HAS_FS_DESC | HAS_HS_DESC | HAS_SS_DESC (7)
//	12     4    fs_count = 3
//	16     4    hs_count = 3
//	20     4    ss_count = 5
//	24     ..   FS: interface, bulk IN (64), bulk OUT (64)
//	            HS: interface, bulk IN (512), bulk OUT (512)
//	            SS: interface, bulk IN (1024), companion, bulk OUT (1024), companion
//
//	interface  09 04 00 00 02 ff 00 00 01   (one vendor interface, iInterface 1)
//	bulk IN    07 05 81 02 <mps LE16> 00
//	bulk OUT   07 05 02 02 <mps LE16> 00
//	companion  06 30 00 00 00 00
//
// Strings: magic 2, length, str_count 1, lang_count 1, then 0x0409 and
// "tbstream cable\0".
//
// Events are 12 bytes (struct usb_functionfs_event): the usb_ctrlrequest
// (8 bytes) then the type (BIND 0, UNBIND 1, ENABLE 2, DISABLE 3, SETUP 4,
// SUSPEND 5, RESUME 6). ENABLE starts a session (the host set the
// configuration: the cable is plugged); DISABLE and UNBIND end it
// (unplugged). A SETUP is stalled: the function has no control requests.
//
// # Sessions
//
// The endpoint files are opened once, O_NONBLOCK: on a disabled endpoint
// a read or write then fails at once (EAGAIN) instead of waiting for the
// next ENABLE, and a transfer in flight when the endpoint is disabled
// fails with ESHUTDOWN, so a session's reader and writer end with it and
// never take the next session's bytes (but for a race narrower than a
// USB reset and re-enumeration: a reader that checked the session just
// before it ended and reads just after the next began; the next session's
// handshake then fails and is retried). A session the gadget ends itself
// (Conn.Close before the host disabled it) unbinds and rebinds the UDC,
// which the host sees as an unplug and a plug.
//
// # Transfers
//
// Each endpoint keeps four transfers of up to 64 KiB queued through Linux
// native AIO (io_submit on the endpoint files, which FunctionFS
// implements: one USB request per iocb), so the UDC always has the next
// transfer when one completes; read(2) and write(2) would allow one.
// Completions are taken in submission order. A write returns once
// queued; one that failed ends the session at the write that finds it
// (the bytes queued with it die with the session, as on a pulled cable).
// Unlike a blocking transfer, an AIO transfer is not interrupted by a
// signal, so no retry can duplicate or lose bytes.
package gadget
