package gadget

import (
	"encoding/binary"
	"fmt"

	"tbstream/nhi/emu/usbcable"
)

// FunctionFS ep0 formats (include/uapi/linux/usb/functionfs.h).
const (
	ffsDescriptorsMagicV2 = 3 // FUNCTIONFS_DESCRIPTORS_MAGIC_V2
	ffsStringsMagic       = 2 // FUNCTIONFS_STRINGS_MAGIC

	ffsHasFSDesc = 1 // FUNCTIONFS_HAS_FS_DESC
	ffsHasHSDesc = 2 // FUNCTIONFS_HAS_HS_DESC
	ffsHasSSDesc = 4 // FUNCTIONFS_HAS_SS_DESC

	ffsEventSize = 12 // sizeof(struct usb_functionfs_event)
	ffsEventType = 8  // offset of its type byte
)

// FunctionFS event types (enum usb_functionfs_event_type).
type eventType uint8

const (
	eventBind    eventType = 0 // FUNCTIONFS_BIND
	eventUnbind  eventType = 1 // FUNCTIONFS_UNBIND
	eventEnable  eventType = 2 // FUNCTIONFS_ENABLE
	eventDisable eventType = 3 // FUNCTIONFS_DISABLE
	eventSetup   eventType = 4 // FUNCTIONFS_SETUP
	eventSuspend eventType = 5 // FUNCTIONFS_SUSPEND
	eventResume  eventType = 6 // FUNCTIONFS_RESUME
)

func (e eventType) String() string {
	names := [...]string{"BIND", "UNBIND", "ENABLE", "DISABLE", "SETUP", "SUSPEND", "RESUME"}
	if int(e) < len(names) {
		return names[e]
	}
	return fmt.Sprintf("event %d", uint8(e))
}

// event is one usb_functionfs_event.
type event struct {
	Type        eventType
	RequestType uint8 // bRequestType of a SETUP
	Request     uint8
	Value       uint16
	Index       uint16
	Length      uint16
}

// parseEvents decodes the events of one ep0 read (whole events only).
func parseEvents(b []byte) []event {
	var out []event
	for ; len(b) >= ffsEventSize; b = b[ffsEventSize:] {
		out = append(out, event{
			Type:        eventType(b[ffsEventType]),
			RequestType: b[0],
			Request:     b[1],
			Value:       binary.LittleEndian.Uint16(b[2:]),
			Index:       binary.LittleEndian.Uint16(b[4:]),
			Length:      binary.LittleEndian.Uint16(b[6:]),
		})
	}
	return out
}

// USB descriptor constants (USB 2.0 §9.4, USB 3.2 §9.6.7).
const (
	descTypeInterface   = 0x04 // INTERFACE
	descTypeEndpoint    = 0x05 // ENDPOINT
	descTypeSSCompanion = 0x30 // SUPERSPEED_USB_ENDPOINT_COMPANION
	interfaceDescSize   = 9
	endpointDescSize    = 7
	ssCompanionDescSize = 6
	endpointIn1         = 0x81 // bEndpointAddress: IN, number 1
	endpointOut2        = 0x02 // bEndpointAddress: OUT, number 2
	attrBulk            = 0x02 // bmAttributes: bulk
	iInterface          = 1    // string index of the interface's name
)

// Bulk wMaxPacketSize per speed (USB 2.0 §5.8.3, USB 3.2 §8.6.6).
const (
	maxPacketFS = 64
	maxPacketHS = 512
	maxPacketSS = 1024
)

func interfaceDesc() []byte {
	return []byte{interfaceDescSize, descTypeInterface, usbcable.InterfaceNumber, usbcable.InterfaceAlt, 2,
		usbcable.InterfaceClass, usbcable.InterfaceSubClass, usbcable.InterfaceProtocol, iInterface}
}

func endpointDesc(addr uint8, mps uint16) []byte {
	return []byte{endpointDescSize, descTypeEndpoint, addr, attrBulk, byte(mps), byte(mps >> 8), 0}
}

func ssCompanion() []byte { return []byte{ssCompanionDescSize, descTypeSSCompanion, 0, 0, 0, 0} }

// descriptorsBlob is the first write to ep0 (see the package doc).
func descriptorsBlob() []byte {
	var descs []byte
	descs = append(descs, interfaceDesc()...)
	descs = append(descs, endpointDesc(endpointIn1, maxPacketFS)...)
	descs = append(descs, endpointDesc(endpointOut2, maxPacketFS)...)
	descs = append(descs, interfaceDesc()...)
	descs = append(descs, endpointDesc(endpointIn1, maxPacketHS)...)
	descs = append(descs, endpointDesc(endpointOut2, maxPacketHS)...)
	descs = append(descs, interfaceDesc()...)
	descs = append(descs, endpointDesc(endpointIn1, maxPacketSS)...)
	descs = append(descs, ssCompanion()...)
	descs = append(descs, endpointDesc(endpointOut2, maxPacketSS)...)
	descs = append(descs, ssCompanion()...)
	const header = 24
	b := make([]byte, header, header+len(descs))
	binary.LittleEndian.PutUint32(b[0:], ffsDescriptorsMagicV2)
	binary.LittleEndian.PutUint32(b[4:], uint32(header+len(descs)))
	binary.LittleEndian.PutUint32(b[8:], ffsHasFSDesc|ffsHasHSDesc|ffsHasSSDesc)
	binary.LittleEndian.PutUint32(b[12:], 3) // fs_count
	binary.LittleEndian.PutUint32(b[16:], 3) // hs_count
	binary.LittleEndian.PutUint32(b[20:], 5) // ss_count
	return append(b, descs...)
}

// interfaceName is string 1, the interface's iInterface.
const interfaceName = "tbstream cable"

// langUSEnglish is the one language of the strings (USB LANGID 0x0409).
const langUSEnglish = 0x0409

// stringsBlob is the second write to ep0.
func stringsBlob() []byte {
	b := make([]byte, 16, 16+2+len(interfaceName)+1)
	b = binary.LittleEndian.AppendUint16(b, langUSEnglish)
	b = append(b, interfaceName...)
	b = append(b, 0)
	binary.LittleEndian.PutUint32(b[0:], ffsStringsMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[8:], 1)  // str_count
	binary.LittleEndian.PutUint32(b[12:], 1) // lang_count
	return b
}
