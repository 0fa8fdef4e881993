package property

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Format lays out the root directory d as a block, byte-exact with Linux's
// tb_property_format_dir: each directory is its header and entries, then the
// data and text of its entries in entry order, then one zero dword of
// padding per child directory, then the child directories one after another,
// each laid out the same way.
func (d *Dir) Format() ([]uint32, error) {
	if d.UUID != nil {
		return nil, fmt.Errorf("format: root directory with a UUID: %w", ErrMalformed)
	}
	n, err := d.size()
	if err != nil {
		return nil, err
	}
	block := make([]uint32, n)
	end := d.formatAt(block, 0)
	if end != n {
		return nil, fmt.Errorf("format: laid out %d of %d dwords: %w", end, n, ErrMalformed)
	}
	return block, nil
}

func (d *Dir) headerWords() int {
	if d.UUID == nil {
		return rootHeaderSize
	}
	return uuidWords
}

// size returns the dwords d occupies with its data and descendants, and
// checks everything formatAt relies on.
func (d *Dir) size() (int, error) {
	n := d.headerWords() + entryWords*len(d.Properties)
	for _, p := range d.Properties {
		if !ValidKey(p.Key) {
			return 0, fmt.Errorf("format %q: %w", p.Key, ErrKey)
		}
		switch p.Type {
		case Directory:
			if p.Dir == nil || p.Dir.UUID == nil {
				return 0, fmt.Errorf("format directory %q without a UUID: %w", p.Key, ErrMalformed)
			}
			sub, err := p.Dir.size()
			if err != nil {
				return 0, fmt.Errorf("%s/%w", p.Key, err)
			}
			n += 1 + sub // the padding dword, then the directory
		case Text:
			if strings.IndexByte(p.Text, 0) >= 0 {
				return 0, fmt.Errorf("format text %q with a NUL: %w", p.Key, ErrMalformed)
			}
			n += textWords(p.Text)
		case Data:
			if len(p.Data)%4 != 0 {
				return 0, fmt.Errorf("format data %q of %d bytes: %w", p.Key, len(p.Data), ErrMalformed)
			}
			n += len(p.Data) / 4
		}
	}
	if n > 0xffff {
		return 0, fmt.Errorf("format: %d dwords: %w", n, ErrMalformed)
	}
	return n, nil
}

// textWords is the length of a text entry: the string, its NUL, padded to
// a dword.
func textWords(s string) int { return (len(s) + 1 + 3) / 4 }

// formatAt writes d at offset start and returns the offset after it and
// its descendants.
func (d *Dir) formatAt(block []uint32, start int) int {
	entries := start + d.headerWords()
	if d.UUID == nil {
		block[start] = RootMagic
		block[start+1] = uint32(entryWords * len(d.Properties))
	} else {
		w := d.UUID.Words()
		copy(block[start:], w[:])
	}
	data := entries + entryWords*len(d.Properties)
	dataEnd := data
	subdirs := 0
	for _, p := range d.Properties {
		switch p.Type {
		case Text:
			dataEnd += textWords(p.Text)
		case Data:
			dataEnd += len(p.Data) / 4
		case Directory:
			subdirs++
		}
	}
	next := dataEnd + subdirs // padding dwords stay zero
	for i, p := range d.Properties {
		e := block[entries+entryWords*i:]
		var key [KeySize]byte
		copy(key[:], p.Key)
		e[0] = binary.BigEndian.Uint32(key[0:4])
		e[1] = binary.BigEndian.Uint32(key[4:8])
		var length int
		switch p.Type {
		case Directory:
			length = uuidWords + entryWords*len(p.Dir.Properties)
			e[3] = uint32(next)
			next = p.Dir.formatAt(block, next)
		case Text:
			length = textWords(p.Text)
			b := make([]byte, 4*length)
			copy(b, p.Text)
			putBytes(block[data:], b)
			e[3] = uint32(data)
			data += length
		case Data:
			length = len(p.Data) / 4
			putBytes(block[data:], p.Data)
			e[3] = uint32(data)
			data += length
		case Value:
			length = 1
			e[3] = p.Value
		default:
			length = int(p.RawLength)
			e[3] = p.Value
		}
		e[2] = uint32(length) | uint32(p.Type)<<24
	}
	return next
}

// putBytes stores b (a multiple of 4 bytes) so that it reads in natural
// order once every dword is sent big-endian.
func putBytes(dst []uint32, b []byte) {
	for i := 0; i < len(b)/4; i++ {
		dst[i] = binary.BigEndian.Uint32(b[4*i:])
	}
}
