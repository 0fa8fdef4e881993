package xdp

import (
	"errors"
	"fmt"
)

// Errors of paged property reads.
var (
	ErrOffset     = errors.New("properties offset out of range")
	ErrTooBig     = errors.New("property block larger than 500 dwords")
	ErrGeneration = errors.New("property block generation changed during the read")
)

// PropertiesPage builds the answer to req from our block: at most
// MaxPropertiesData dwords from req.Offset, with the block's total length
// and generation. An offset at or past the end is ErrOffset (Linux answers
// nothing in that case).
func PropertiesPage(req *PropertiesRequest, self UUID, block []uint32, generation uint32) (*PropertiesResponse, error) {
	if len(block) > MaxPropertiesLength {
		return nil, fmt.Errorf("serve block of %d dwords: %w", len(block), ErrTooBig)
	}
	off := int(req.Offset)
	if off >= len(block) {
		return nil, fmt.Errorf("properties request at %d of %d dwords: %w", off, len(block), ErrOffset)
	}
	n := min(MaxPropertiesData, len(block)-off)
	return &PropertiesResponse{
		Header:     req.Header,
		Src:        self,
		Dst:        req.Src,
		Offset:     req.Offset,
		DataLength: uint16(len(block)),
		Generation: generation,
		Data:       block[off : off+n],
	}, nil
}

// BlockReader reassembles a property block from PROPERTIES_RESPONSE pages.
// Ask for Offset(), Add the response, repeat until Add reports done. It is
// stricter than Linux: pages must not overrun the announced length, must
// make progress, and must all carry the same generation (on ErrGeneration
// the caller starts a new read).
type BlockReader struct {
	block      []uint32
	length     int
	offset     int
	generation uint32
	started    bool
}

// Offset is the offset to request next.
func (r *BlockReader) Offset() uint16 { return uint16(r.offset) }

// Add takes the response to the request for Offset().
func (r *BlockReader) Add(resp *PropertiesResponse) (done bool, err error) {
	if int(resp.Offset) != r.offset {
		return false, fmt.Errorf("properties response at %d, asked for %d: %w", resp.Offset, r.offset, ErrOffset)
	}
	if !r.started {
		if resp.DataLength > MaxPropertiesLength {
			return false, fmt.Errorf("block of %d dwords: %w", resp.DataLength, ErrTooBig)
		}
		r.length = int(resp.DataLength)
		r.generation = resp.Generation
		r.block = make([]uint32, 0, r.length)
		r.started = true
	}
	switch {
	case resp.Generation != r.generation:
		return false, fmt.Errorf("generation %d after %d: %w", resp.Generation, r.generation, ErrGeneration)
	case int(resp.DataLength) != r.length:
		return false, fmt.Errorf("block length %d after %d: %w", resp.DataLength, r.length, ErrLength)
	case r.offset+len(resp.Data) > r.length:
		return false, fmt.Errorf("page of %d dwords at %d overruns %d: %w", len(resp.Data), r.offset, r.length, ErrLength)
	case len(resp.Data) == 0 && r.offset < r.length:
		return false, fmt.Errorf("empty page at %d of %d: %w", r.offset, r.length, ErrLength)
	}
	r.block = append(r.block, resp.Data...)
	r.offset += len(resp.Data)
	return r.offset >= r.length, nil
}

// Block returns the assembled block and its generation once Add reported
// done.
func (r *BlockReader) Block() ([]uint32, uint32) { return r.block, r.generation }
