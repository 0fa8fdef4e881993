package property

import (
	"encoding/binary"
	"fmt"

	"tbstream/xdomain/xdp"
)

// Parse decodes a block received from a peer. It applies Linux's
// validation (root magic, root length within the block, DIR/DATA/TEXT
// entries inside the block, immediates of length 1, text force-terminated)
// and is stricter where Linux would read out of bounds or loop: every entry
// and every directory header must lie inside the block, a directory's
// length must cover its UUID, and no directory may be referenced twice.
func Parse(block []uint32) (*Dir, error) {
	if len(block) < rootHeaderSize {
		return nil, fmt.Errorf("parse block of %d dwords: %w", len(block), ErrMalformed)
	}
	if block[0] != RootMagic {
		return nil, fmt.Errorf("parse block: magic %#08x: %w", block[0], ErrMalformed)
	}
	if int64(block[1]) > int64(len(block)) {
		return nil, fmt.Errorf("parse block: root length %d of %d: %w", block[1], len(block), ErrMalformed)
	}
	p := parser{block: block, seen: map[uint32]bool{}}
	return p.dir(nil, rootHeaderSize, int(block[1]))
}

type parser struct {
	block []uint32
	seen  map[uint32]bool // directory offsets already parsed
}

func (ps *parser) dir(uuid *xdp.UUID, content, length int) (*Dir, error) {
	n := length / entryWords
	if content+n*entryWords > len(ps.block) {
		return nil, fmt.Errorf("directory at %d: %d entries overrun %d dwords: %w", content, n, len(ps.block), ErrMalformed)
	}
	d := &Dir{UUID: uuid, Properties: make([]*Property, 0, n)}
	for i := 0; i < n; i++ {
		p, err := ps.entry(ps.block[content+i*entryWords:][:entryWords])
		if err != nil {
			return nil, err
		}
		d.Properties = append(d.Properties, p)
	}
	return d, nil
}

func (ps *parser) entry(e []uint32) (*Property, error) {
	var kb [KeySize]byte
	binary.BigEndian.PutUint32(kb[0:4], e[0])
	binary.BigEndian.PutUint32(kb[4:8], e[1])
	key := cString(kb[:])
	if key == "" {
		return nil, fmt.Errorf("entry with an empty key: %w", ErrKey)
	}
	p := &Property{Key: key, Type: Type(e[2] >> 24)}
	length, value := e[2]&0xffff, e[3]
	blockLen := uint64(len(ps.block))

	switch p.Type {
	case Directory, Data, Text:
		if uint64(length) > blockLen || uint64(value)+uint64(length) > blockLen {
			return nil, fmt.Errorf("entry %q (%v) at %d+%d outside %d dwords: %w", key, p.Type, value, length, blockLen, ErrMalformed)
		}
	case Value:
		if length != 1 {
			return nil, fmt.Errorf("immediate %q of length %d: %w", key, length, ErrMalformed)
		}
	}

	switch p.Type {
	case Directory:
		if length < uuidWords {
			return nil, fmt.Errorf("directory %q of length %d: %w", key, length, ErrMalformed)
		}
		if ps.seen[value] {
			return nil, fmt.Errorf("directory %q at %d referenced twice: %w", key, value, ErrMalformed)
		}
		ps.seen[value] = true
		u := xdp.UUIDFromWords(ps.block[value : value+uuidWords])
		dir, err := ps.dir(&u, int(value)+uuidWords, int(length)-uuidWords)
		if err != nil {
			return nil, fmt.Errorf("%s/%w", key, err)
		}
		p.Dir = dir
	case Data:
		p.Data = wordBytes(ps.block[value : value+length])
	case Text:
		text := wordBytes(ps.block[value : value+length])
		if len(text) > 0 {
			text = text[:len(text)-1] // Linux force-terminates the text
		}
		p.Text = cString(text)
	case Value:
		p.Value = value
	default:
		p.RawLength = uint16(length)
		p.Value = value
	}
	return p, nil
}

// wordBytes is the inverse of putBytes.
func wordBytes(words []uint32) []byte {
	b := make([]byte, 4*len(words))
	for i, w := range words {
		binary.BigEndian.PutUint32(b[4*i:], w)
	}
	return b
}

// cString returns b up to its first NUL, or all of b.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
