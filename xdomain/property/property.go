// Package property is the XDomain property block: the self-description a
// host publishes to its peers (vendor, device, maximum HopID, one directory
// per service) and reads from them, parsed and formatted byte-exact with
// Linux's drivers/thunderbolt/property.c.
//
// A block is an array of host-order dwords; PROPERTIES_RESPONSE pages carry
// it, and the control channel sends every dword big-endian. Keys, text and
// data are stored pre-swapped so that they read in natural byte order on
// the wire; numbers are plain dwords; directory UUIDs follow Linux's dword
// quirk (see xdp.UUID.Words).
//
// The package knows nothing of transport: xdomain/xdp pages blocks, the
// discovery code in xdomain decides what to publish.
package property

import (
	"errors"
	"fmt"
	"strconv"

	"tbstream/xdomain/xdp"
)

// Type is an entry's type byte.
type Type uint8

// Entry types (enum tb_property_type). Unknown is any other byte, kept
// verbatim.
const (
	Directory Type = 0x44 // 'D'
	Data      Type = 0x64 // 'd'
	Text      Type = 0x74 // 't'
	Value     Type = 0x76 // 'v', an immediate
)

func (t Type) String() string {
	switch t {
	case Directory, Data, Text, Value:
		return string(rune(t))
	}
	return "0x" + strconv.FormatUint(uint64(t), 16)
}

// Format limits.
const (
	// RootMagic is the first dword of a block ("UXD", version 1).
	RootMagic = 0x55584401
	// KeySize is TB_PROPERTY_KEY_SIZE: keys have at most 8 bytes.
	KeySize = 8
	// entryWords is the size of one entry: key_hi, key_lo, length/type,
	// value.
	entryWords     = 4
	rootHeaderSize = 2
	uuidWords      = 4
)

// Errors. Test with errors.Is.
var (
	ErrMalformed = errors.New("malformed property block")
	ErrKey       = errors.New("invalid property key")
	ErrUUID      = errors.New("directory UUIDs differ")
)

// Property is one entry of a directory. Which field holds the value depends
// on Type.
type Property struct {
	Key  string
	Type Type

	Value uint32 // Value; for unknown types the raw value dword
	Text  string // Text, without the terminating NUL
	Data  []byte // Data, a multiple of 4 bytes, in wire order
	Dir   *Dir   // Directory

	// RawLength is the length field of an entry of unknown type, kept so
	// that such an entry is formatted as it was received.
	RawLength uint16
}

// Dir is a directory: the root of a block (no UUID) or a service or stream
// directory (with one).
type Dir struct {
	UUID       *xdp.UUID // nil for the root
	Properties []*Property
}

// NewDir returns an empty directory; uuid is nil for a root directory.
func NewDir(uuid *xdp.UUID) *Dir {
	if uuid != nil {
		u := *uuid
		uuid = &u
	}
	return &Dir{UUID: uuid}
}

// ValidKey reports whether key can be published: 1 to 8 bytes, no NUL.
func ValidKey(key string) bool {
	if len(key) == 0 || len(key) > KeySize {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] == 0 {
			return false
		}
	}
	return true
}

func (d *Dir) add(p *Property) error {
	if !ValidKey(p.Key) {
		return fmt.Errorf("add %q: %w", p.Key, ErrKey)
	}
	d.Properties = append(d.Properties, p)
	return nil
}

// AddValue appends an immediate.
func (d *Dir) AddValue(key string, v uint32) error {
	return d.add(&Property{Key: key, Type: Value, Value: v})
}

// AddText appends a text entry.
func (d *Dir) AddText(key, text string) error {
	return d.add(&Property{Key: key, Type: Text, Text: text})
}

// AddData appends a data entry; data is padded with zeros to a dword.
func (d *Dir) AddData(key string, data []byte) error {
	padded := make([]byte, (len(data)+3)/4*4)
	copy(padded, data)
	return d.add(&Property{Key: key, Type: Data, Data: padded})
}

// AddDir appends a subdirectory, which must have a UUID. As Linux's
// tb_property_add_dir, a directory key may appear once.
func (d *Dir) AddDir(key string, child *Dir) error {
	if child.UUID == nil {
		return fmt.Errorf("add directory %q without a UUID: %w", key, ErrMalformed)
	}
	if d.Find(key, Directory) != nil {
		return fmt.Errorf("add directory %q twice: %w", key, ErrKey)
	}
	return d.add(&Property{Key: key, Type: Directory, Dir: child})
}

// Find returns the entry with this key and type, or nil. The type matters:
// Linux publishes deviceid both as a value and as text.
func (d *Dir) Find(key string, t Type) *Property {
	for _, p := range d.Properties {
		if p.Key == key && p.Type == t {
			return p
		}
	}
	return nil
}

// FindDir returns the subdirectory key, or nil.
func (d *Dir) FindDir(key string) *Dir {
	if p := d.Find(key, Directory); p != nil {
		return p.Dir
	}
	return nil
}

// Remove deletes the entry with this key and type and reports whether it
// existed.
func (d *Dir) Remove(key string, t Type) bool {
	for i, p := range d.Properties {
		if p.Key == key && p.Type == t {
			d.Properties = append(d.Properties[:i], d.Properties[i+1:]...)
			return true
		}
	}
	return false
}

// Copy returns a deep copy of d.
func (d *Dir) Copy() *Dir {
	c := NewDir(d.UUID)
	c.Properties = make([]*Property, len(d.Properties))
	for i, p := range d.Properties {
		q := *p
		if p.Data != nil {
			q.Data = append([]byte(nil), p.Data...)
		}
		if p.Dir != nil {
			q.Dir = p.Dir.Copy()
		}
		c.Properties[i] = &q
	}
	return c
}

// Merge adds src's entries to d, as Linux's tb_property_merge_dir: both
// directories must have the same UUID (or both none); an entry whose key
// and type d already has is replaced when replace is set and kept
// otherwise; other entries are appended (deep copies) in src's order.
func (d *Dir) Merge(src *Dir, replace bool) error {
	if (d.UUID == nil) != (src.UUID == nil) || d.UUID != nil && *d.UUID != *src.UUID {
		return fmt.Errorf("merge directory: %w", ErrUUID)
	}
	for _, p := range src.Copy().Properties {
		for i, q := range d.Properties {
			if q.Key == p.Key && q.Type == p.Type {
				if replace {
					d.Properties[i] = p
				}
				p = nil
				break
			}
		}
		if p != nil {
			d.Properties = append(d.Properties, p)
		}
	}
	return nil
}
