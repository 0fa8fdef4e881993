package gadget

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	var digits []string
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "//")
		digits = append(digits, strings.Fields(line)...)
	}
	b, err := hex.DecodeString(strings.Join(digits, ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The blobs against the layout of include/uapi/linux/usb/functionfs.h and
// the reference's descriptor bytes, field by field.
func TestDescriptorsBlob(t *testing.T) {
	want := unhex(t, `
		03000000 69000000 07000000     // magic V2, length 105, flags FS|HS|SS
		03000000 03000000 05000000     // fs_count, hs_count, ss_count
		09 04 00 00 02 ff 00 00 01       // FS interface 0, 2 endpoints, vendor class, iInterface 1
		07 05 81 02 4000 00              // FS bulk IN 0x81, 64
		07 05 02 02 4000 00              // FS bulk OUT 0x02, 64
		09 04 00 00 02 ff 00 00 01       // HS interface
		07 05 81 02 0002 00              // HS bulk IN, 512
		07 05 02 02 0002 00              // HS bulk OUT, 512
		09 04 00 00 02 ff 00 00 01       // SS interface
		07 05 81 02 0004 00              // SS bulk IN, 1024
		06 30 00 00 00 00                // its companion
		07 05 02 02 0004 00              // SS bulk OUT, 1024
		06 30 00 00 00 00                // its companion`)
	assert.Equal(t, hex.EncodeToString(want), hex.EncodeToString(descriptorsBlob()))
}

func TestStringsBlob(t *testing.T) {
	want := unhex(t, `
		02000000 21000000 01000000 01000000   // magic, length 33, str_count 1, lang_count 1
		0904                                  // LANGID 0x0409
		746273747265616d206361626c6500         // "tbstream cable\0"`)
	assert.Equal(t, hex.EncodeToString(want), hex.EncodeToString(stringsBlob()))
}

func TestParseEvents(t *testing.T) {
	b := unhex(t, `
		000000000000000000000000   // BIND
		c1 05 0100 0000 0400 04 000000   // SETUP: IN vendor interface, bRequest 5, wValue 1, wLength 4
		000000000000000002000000   // ENABLE
		0000`)
	ev := parseEvents(b)
	assert.Equal(t, []event{
		{Type: eventBind},
		{Type: eventSetup, RequestType: 0xc1, Request: 5, Value: 1, Length: 4},
		{Type: eventEnable},
	}, ev)
	assert.Equal(t, "DISABLE", eventDisable.String())
	assert.Equal(t, "event 9", eventType(9).String())
}
