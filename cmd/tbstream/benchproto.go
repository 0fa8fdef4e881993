package main

// The wire protocol of tbstream bench, spoken over one stream (a
// bidirectional byte pipe between two /dev/tbstreamX), so that a client
// and a server on two machines need nothing but the stream itself.
//
// Every message is a tag of 4 ASCII bytes, a little-endian uint32 body
// length and the body:
//
//	HELO  client → server  the test: mode, sizes, counts, seeds (see hello)
//	REDY  server → client  a status byte (0: accepted) and a reason
//	DATA  either way       bandwidth payload: the pattern at the sender's offset
//	DONE  either way       the end of a direction's data: uint64 payload bytes sent
//	RSLT  server → client  the server's side of the test (see result)
//
// Bandwidth: HELO, REDY, then DATA… DONE from the client (and at the same
// time from the server with -bidir), then RSLT. Latency: HELO, REDY, then
// for each size, warm-up plus rounds of one message of exactly that size
// from the client, echoed back by the server, without framing; then RSLT.
// A client may run several tests one after the other on one open device;
// closing it ends the session (the server reads EOF).
//
// The payload is self-describing: each aligned 8-byte little-endian word
// holds its byte offset in the direction's data, xor a per-direction seed.
// A receiver that finds a wrong word can therefore say which offset the
// bytes it got were sent at: lost, repeated and reordered data are told
// apart from corruption.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Message tags.
const (
	tagHello  = "HELO"
	tagReady  = "REDY"
	tagData   = "DATA"
	tagDone   = "DONE"
	tagResult = "RSLT"
)

const (
	protocolVersion = 1
	msgHeaderSize   = 8
	// maxControlBody bounds every message but DATA: a peer speaking
	// something else is refused rather than read into memory.
	maxControlBody = 4096
	// minWriteSize leaves room for a header and one pattern word;
	// maxWriteSize bounds the buffers a HELO makes the server allocate.
	minWriteSize = msgHeaderSize + 8
	maxWriteSize = 16 << 20
	// maxMessageSize bounds one latency message, maxLatencySizes the
	// number of sizes, maxRounds the warm-up plus rounds of one size.
	maxMessageSize  = 64 << 20
	maxLatencySizes = 64
	maxRounds       = 10_000_000
	maxDuration     = 24 * time.Hour
	helloFixedSize  = 2 + 1 + 1 + 4 + 8 + 8 + 8 + 8 + 2
	latencySizeSize = 4 + 4 + 4
)

type testMode uint8

const (
	modeBandwidth testMode = 1
	modeLatency   testMode = 2
)

func (m testMode) String() string {
	switch m {
	case modeBandwidth:
		return "bandwidth"
	case modeLatency:
		return "latency"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

const flagBidir = 1 << 0

// hello describes one test; the client sends it, the server obeys it.
type hello struct {
	Mode testMode
	// Bidir: the server sends DATA to the client at the same time.
	Bidir bool
	// WriteSize is the size of each write(2) of DATA, header included.
	WriteSize uint32
	// Bytes of payload per direction; when 0, each sender sends for
	// Duration.
	Bytes    uint64
	Duration time.Duration
	// SeedUp xors the pattern from client to server (in latency mode,
	// of the echoed messages too), SeedDown from server to client.
	SeedUp, SeedDown uint64
	// Sizes are the latency test's message sizes, in order.
	Sizes []latencySize
}

// latencySize is one message size of a latency test: Warmup round trips
// not measured, then Rounds measured.
type latencySize struct {
	Size, Warmup, Rounds uint32
}

// marshal encodes h as a HELO message (header included).
func (h *hello) marshal() []byte {
	body := make([]byte, 0, helloFixedSize+len(h.Sizes)*latencySizeSize)
	var flags uint8
	if h.Bidir {
		flags |= flagBidir
	}
	body = binary.LittleEndian.AppendUint16(body, protocolVersion)
	body = append(body, uint8(h.Mode), flags)
	body = binary.LittleEndian.AppendUint32(body, h.WriteSize)
	body = binary.LittleEndian.AppendUint64(body, h.Bytes)
	body = binary.LittleEndian.AppendUint64(body, uint64(h.Duration))
	body = binary.LittleEndian.AppendUint64(body, h.SeedUp)
	body = binary.LittleEndian.AppendUint64(body, h.SeedDown)
	body = binary.LittleEndian.AppendUint16(body, uint16(len(h.Sizes)))
	for _, s := range h.Sizes {
		body = binary.LittleEndian.AppendUint32(body, s.Size)
		body = binary.LittleEndian.AppendUint32(body, s.Warmup)
		body = binary.LittleEndian.AppendUint32(body, s.Rounds)
	}
	return appendMessage(nil, tagHello, body)
}

// unmarshalHello decodes and validates a HELO body: everything a server
// allocates or loops over is bounded here.
func unmarshalHello(body []byte) (*hello, error) {
	if len(body) < helloFixedSize {
		return nil, fmt.Errorf("HELO of %d bytes, want at least %d", len(body), helloFixedSize)
	}
	le := binary.LittleEndian
	if v := le.Uint16(body); v != protocolVersion {
		return nil, fmt.Errorf("protocol version %d, this tbstream speaks %d", v, protocolVersion)
	}
	h := &hello{
		Mode:      testMode(body[2]),
		Bidir:     body[3]&flagBidir != 0,
		WriteSize: le.Uint32(body[4:]),
		Bytes:     le.Uint64(body[8:]),
		Duration:  time.Duration(le.Uint64(body[16:])),
		SeedUp:    le.Uint64(body[24:]),
		SeedDown:  le.Uint64(body[32:]),
	}
	if body[3]&^flagBidir != 0 {
		return nil, fmt.Errorf("unknown flags %#x", body[3])
	}
	n := int(le.Uint16(body[40:]))
	if want := helloFixedSize + n*latencySizeSize; len(body) != want {
		return nil, fmt.Errorf("HELO of %d bytes with %d sizes, want %d", len(body), n, want)
	}
	for i := range n {
		p := body[helloFixedSize+i*latencySizeSize:]
		h.Sizes = append(h.Sizes, latencySize{Size: le.Uint32(p), Warmup: le.Uint32(p[4:]), Rounds: le.Uint32(p[8:])})
	}
	return h, h.validate()
}

func (h *hello) validate() error {
	switch h.Mode {
	case modeBandwidth:
		if h.WriteSize < minWriteSize || h.WriteSize > maxWriteSize {
			return fmt.Errorf("write size %d: want %d to %d", h.WriteSize, minWriteSize, maxWriteSize)
		}
		if h.Bytes == 0 && (h.Duration <= 0 || h.Duration > maxDuration) {
			return fmt.Errorf("duration %v: want a byte count or up to %v", h.Duration, maxDuration)
		}
		if len(h.Sizes) != 0 {
			return errors.New("bandwidth test with latency sizes")
		}
	case modeLatency:
		if len(h.Sizes) == 0 || len(h.Sizes) > maxLatencySizes {
			return fmt.Errorf("%d latency sizes: want 1 to %d", len(h.Sizes), maxLatencySizes)
		}
		for _, s := range h.Sizes {
			if s.Size == 0 || s.Size > maxMessageSize {
				return fmt.Errorf("message size %d: want 1 to %d", s.Size, maxMessageSize)
			}
			if s.Rounds == 0 || uint64(s.Rounds)+uint64(s.Warmup) > maxRounds {
				return fmt.Errorf("%d+%d rounds of %d bytes: want 1 to %d in all", s.Warmup, s.Rounds, s.Size, maxRounds)
			}
		}
		if h.Bidir {
			return errors.New("latency test with -bidir")
		}
	default:
		return fmt.Errorf("unknown test %v", h.Mode)
	}
	return nil
}

// result is the server's side of a test, sent in RSLT.
type result struct {
	// RxBytes of payload the server received and verified, in RxTime
	// (from REDY to DONE).
	RxBytes uint64
	RxTime  time.Duration
	// TxBytes the server sent (bidirectional bandwidth), in TxTime.
	TxBytes uint64
	TxTime  time.Duration
	// Err is what went wrong on the server ("" when nothing did).
	Err string
}

func (r *result) marshal() []byte {
	errText := r.Err
	if len(errText) > maxControlBody-64 {
		errText = errText[:maxControlBody-64]
	}
	body := make([]byte, 0, 34+len(errText))
	body = binary.LittleEndian.AppendUint64(body, r.RxBytes)
	body = binary.LittleEndian.AppendUint64(body, uint64(r.RxTime))
	body = binary.LittleEndian.AppendUint64(body, r.TxBytes)
	body = binary.LittleEndian.AppendUint64(body, uint64(r.TxTime))
	body = binary.LittleEndian.AppendUint16(body, uint16(len(errText)))
	body = append(body, errText...)
	return appendMessage(nil, tagResult, body)
}

func unmarshalResult(body []byte) (*result, error) {
	if len(body) < 34 {
		return nil, fmt.Errorf("RSLT of %d bytes, want at least 34", len(body))
	}
	le := binary.LittleEndian
	r := &result{
		RxBytes: le.Uint64(body), RxTime: time.Duration(le.Uint64(body[8:])),
		TxBytes: le.Uint64(body[16:]), TxTime: time.Duration(le.Uint64(body[24:])),
	}
	if n := int(le.Uint16(body[32:])); len(body) != 34+n {
		return nil, fmt.Errorf("RSLT of %d bytes with an error text of %d", len(body), n)
	}
	r.Err = string(body[34:])
	return r, nil
}

// readyMessage is REDY: status 0 accepts the test, anything else refuses
// it for reason.
func readyMessage(refusal error) []byte {
	if refusal == nil {
		return appendMessage(nil, tagReady, []byte{0})
	}
	reason := refusal.Error()
	if len(reason) > maxControlBody-1 {
		reason = reason[:maxControlBody-1]
	}
	return appendMessage(nil, tagReady, append([]byte{1}, reason...))
}

func parseReady(body []byte) error {
	if len(body) == 0 {
		return errors.New("empty REDY")
	}
	if body[0] != 0 {
		return fmt.Errorf("the server refused the test: %s", body[1:])
	}
	return nil
}

func appendMessage(b []byte, tag string, body []byte) []byte {
	b = append(b, tag...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

func putHeader(b []byte, tag string, length int) {
	copy(b, tag)
	binary.LittleEndian.PutUint32(b[4:], uint32(length))
}

// readHeader reads one message header.
func readHeader(r io.Reader) (tag string, length uint32, err error) {
	var h [msgHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", 0, err
	}
	return string(h[:4]), binary.LittleEndian.Uint32(h[4:]), nil
}

// readControl reads one message that must be want, of at most
// maxControlBody bytes.
func readControl(r io.Reader, want string) ([]byte, error) {
	tag, n, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	if tag != want {
		return nil, fmt.Errorf("got message %q, want %s", printableTag(tag), want)
	}
	if n > maxControlBody {
		return nil, fmt.Errorf("%s of %d bytes: at most %d", tag, n, maxControlBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("%s body: %w", tag, err)
	}
	return body, nil
}

func printableTag(tag string) string {
	for _, c := range []byte(tag) {
		if c < ' ' || c > '~' {
			return fmt.Sprintf("%x", tag)
		}
	}
	return tag
}

// ---- the pattern ----

// fillPattern writes the pattern of seed for the data offsets
// [off, off+len(b)) into b.
func fillPattern(b []byte, off, seed uint64) {
	// An unaligned start: the tail bytes of the word that holds off.
	if head := off & 7; head != 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], (off&^7)^seed)
		n := copy(b, w[head:])
		b, off = b[n:], off+uint64(n)
	}
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, off^seed)
		b, off = b[8:], off+8
	}
	if len(b) > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], off^seed)
		copy(b, w[:])
	}
}

// checker verifies a direction's data as it arrives, in pieces of any
// size. It compares whole aligned words, so that a wrong word can be
// decoded into the offset it was sent at; the bytes of a word not yet
// complete wait in carry. After a wrong word it looks at the next one
// before it reports: bytes out of place continue from where they were
// sent, a corrupted word does not.
type checker struct {
	seed    uint64
	off     uint64 // offset of the word carry holds (always aligned)
	carry   [8]byte
	ncarry  int
	pending *mismatchError // a wrong word, waiting for the word after it
}

// newChecker expects data starting at offset start.
func newChecker(seed, start uint64) *checker {
	c := &checker{seed: seed, off: start &^ 7, ncarry: int(start & 7)}
	// The bytes before start are taken as received: they match.
	binary.LittleEndian.PutUint64(c.carry[:], c.off^seed)
	return c
}

// offset is how many bytes (from offset 0) have been received.
func (c *checker) offset() uint64 { return c.off + uint64(c.ncarry) }

// feed checks the next bytes of the data.
func (c *checker) feed(b []byte) error {
	if c.pending != nil {
		return c.completePending(b)
	}
	if c.ncarry > 0 {
		n := copy(c.carry[c.ncarry:], b)
		c.ncarry += n
		b = b[n:]
		if c.ncarry < 8 {
			return nil
		}
		if got := binary.LittleEndian.Uint64(c.carry[:]); got != c.off^c.seed {
			return c.mismatch(got, b)
		}
		c.off += 8
		c.ncarry = 0
	}
	off, seed := c.off, c.seed
	for len(b) >= 8 {
		if got := binary.LittleEndian.Uint64(b); got != off^seed {
			c.off = off
			return c.mismatch(got, b[8:])
		}
		b, off = b[8:], off+8
	}
	c.off = off
	c.ncarry = copy(c.carry[:], b)
	return nil
}

// mismatch reports the wrong word got at c.off when rest (what follows
// it) holds the next word, or keeps it pending until that arrives.
func (c *checker) mismatch(got uint64, rest []byte) error {
	c.pending = &mismatchError{Offset: c.off, Got: got, Want: c.off ^ c.seed, seed: c.seed}
	c.ncarry = 0
	return c.completePending(rest)
}

func (c *checker) completePending(b []byte) error {
	n := copy(c.carry[c.ncarry:], b)
	c.ncarry += n
	if c.ncarry < 8 {
		return nil
	}
	c.pending.next, c.pending.hasNext = binary.LittleEndian.Uint64(c.carry[:]), true
	return c.pending
}

// finish checks that the data ended after exactly total bytes, the last
// partial word included.
func (c *checker) finish(total uint64) error {
	if c.pending != nil {
		return c.pending
	}
	if got := c.offset(); got != total {
		if got < total {
			return fmt.Errorf("received %d bytes, the sender sent %d: %d lost at the end", got, total, total-got)
		}
		return fmt.Errorf("received %d bytes, the sender sent %d", got, total)
	}
	if c.ncarry > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], c.off^c.seed)
		for i := range c.ncarry {
			if c.carry[i] != w[i] {
				return &mismatchError{Offset: c.off, Got: binary.LittleEndian.Uint64(c.carry[:]), Want: binary.LittleEndian.Uint64(w[:]), seed: c.seed}
			}
		}
	}
	return nil
}

// mismatchError is data that is not what was sent at Offset.
type mismatchError struct {
	Offset    uint64 // of the first wrong 8-byte word
	Got, Want uint64 // the words
	seed      uint64
	// next is the word after the wrong one, when the data went on.
	next    uint64
	hasNext bool
}

// From returns the offset the received bytes were sent at, when the wrong
// word and the one after it are two consecutive words of the pattern from
// somewhere else (a single corrupted word is not).
func (e *mismatchError) From() (uint64, bool) {
	from := e.Got ^ e.seed
	if !e.hasNext || from&7 != 0 || e.next != (from+8)^e.seed {
		return 0, false
	}
	return from, true
}

func (e *mismatchError) Error() string {
	from, ok := e.From()
	switch {
	case !ok:
		return fmt.Sprintf("data corrupted at offset %d: got %016x, want %016x", e.Offset, e.Got, e.Want)
	case from > e.Offset:
		return fmt.Sprintf("data out of place at offset %d: got the bytes sent at offset %d (%d bytes lost or reordered)", e.Offset, from, from-e.Offset)
	default:
		return fmt.Sprintf("data out of place at offset %d: got the bytes sent at offset %d again (%d bytes back: repeated or reordered)", e.Offset, from, e.Offset-from)
	}
}

// ---- sending and receiving bandwidth data ----

// dataSender writes DATA messages of writeSize bytes (header included).
type dataSender struct {
	w         io.Writer
	seed      uint64
	buf       []byte
	sent      uint64 // payload bytes
	onWritten func(n int)
	// abort, when set, stops the sender before its next write, without
	// DONE (the server then sends its RSLT).
	abort *atomic.Bool
}

// errAborted is a sender stopped by its abort flag.
var errAborted = errors.New("stopped: the other direction failed")

func newDataSender(w io.Writer, writeSize int, seed uint64, onWritten func(int)) *dataSender {
	return &dataSender{w: w, seed: seed, buf: make([]byte, writeSize), onWritten: onWritten}
}

// run sends limit bytes of payload, or (limit 0) until duration has
// passed, then DONE. A short write is never seen here: os.File.Write loops
// until all is written or it fails, and the FUSE fallback's writes are
// short when the TX ring is full.
func (s *dataSender) run(limit uint64, duration time.Duration) (time.Duration, error) {
	start := time.Now()
	payload := uint64(len(s.buf) - msgHeaderSize)
	for {
		n := payload
		if limit > 0 {
			if s.sent >= limit {
				break
			}
			n = min(n, limit-s.sent)
		} else if time.Since(start) >= duration {
			break
		}
		if s.abort != nil && s.abort.Load() {
			return time.Since(start), errAborted
		}
		putHeader(s.buf, tagData, int(n))
		fillPattern(s.buf[msgHeaderSize:msgHeaderSize+n], s.sent, s.seed)
		if _, err := s.w.Write(s.buf[:msgHeaderSize+n]); err != nil {
			return time.Since(start), fmt.Errorf("write at offset %d: %w", s.sent, err)
		}
		s.sent += n
		if s.onWritten != nil {
			s.onWritten(int(n))
		}
	}
	done := appendMessage(nil, tagDone, binary.LittleEndian.AppendUint64(nil, s.sent))
	if _, err := s.w.Write(done); err != nil {
		return time.Since(start), fmt.Errorf("write DONE after %d bytes: %w", s.sent, err)
	}
	return time.Since(start), nil
}

// receiveData reads DATA messages until DONE and verifies every byte in
// place in r's buffer; it returns the bytes received.
func receiveData(r *bufio.Reader, seed uint64, onRead func(n int)) (uint64, error) {
	c := newChecker(seed, 0)
	for {
		tag, n, err := readHeader(r)
		if err != nil {
			return c.offset(), fmt.Errorf("after %d bytes of data: %w", c.offset(), eofIsUnexpected(err))
		}
		switch tag {
		case tagData:
			if n > maxWriteSize {
				return c.offset(), fmt.Errorf("at offset %d: DATA of %d bytes, at most %d (lost or corrupted framing?)", c.offset(), n, maxWriteSize)
			}
			for left := int(n); left > 0; {
				if r.Buffered() == 0 {
					if _, err := r.Peek(1); err != nil {
						return c.offset(), fmt.Errorf("after %d bytes of data: %w", c.offset(), eofIsUnexpected(err))
					}
				}
				p, _ := r.Peek(min(left, r.Buffered()))
				if err := c.feed(p); err != nil {
					return c.offset(), err
				}
				r.Discard(len(p))
				left -= len(p)
				if onRead != nil {
					onRead(len(p))
				}
			}
		case tagDone:
			if n != 8 {
				return c.offset(), fmt.Errorf("at offset %d: DONE of %d bytes, want 8", c.offset(), n)
			}
			var b [8]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return c.offset(), fmt.Errorf("DONE: %w", eofIsUnexpected(err))
			}
			return c.offset(), c.finish(binary.LittleEndian.Uint64(b[:]))
		case tagResult:
			// The peer gave up and says why (only a server sends RSLT).
			if n > maxControlBody {
				return c.offset(), fmt.Errorf("at offset %d: RSLT of %d bytes, at most %d", c.offset(), n, maxControlBody)
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(r, body); err != nil {
				return c.offset(), fmt.Errorf("RSLT: %w", eofIsUnexpected(err))
			}
			res, err := unmarshalResult(body)
			if err != nil {
				return c.offset(), err
			}
			if res.Err == "" {
				res.Err = fmt.Sprintf("a result after %d bytes, before the end of the data", c.offset())
			}
			return c.offset(), &serverError{res.Err}
		default:
			return c.offset(), fmt.Errorf("at offset %d: message %q, want DATA or DONE (lost or corrupted framing?)", c.offset(), printableTag(tag))
		}
	}
}

// eofIsUnexpected: the stream ending in the middle of a test is an error
// to report, not the normal end io.EOF stands for.
func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("the peer closed the stream: %w", io.ErrUnexpectedEOF)
	}
	return err
}
