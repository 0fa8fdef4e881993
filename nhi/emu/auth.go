package emu

// Cable keys and the handshake of socket cables ("Cable handshake" in the
// package doc).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// Cable key limits.
const (
	MinCableKeySize = 16   // bytes: a key shorter than this is refused
	MaxCableKeySize = 4096 // bytes
)

// handshakeTimeout bounds the whole handshake of a socket cable, hellos
// and proofs: a peer that stays silent longer is refused.
const handshakeTimeout = 2 * time.Second

// ErrRefused is returned when a socket cable's handshake fails for a
// reason of trust rather than framing: a key is missing on one end, the
// proof is wrong, or the peer mirrors this host's own hello.
var ErrRefused = errors.New("cable peer refused")

// cableRole says which end of a socket cable a host is; each proof names
// the role of its sender, so a host's own proof sent back to it (a
// reflection) does not pass for the peer's.
type cableRole byte

const (
	roleDialer   cableRole = 'D'
	roleListener cableRole = 'L'
)

func (r cableRole) peer() cableRole {
	if r == roleDialer {
		return roleListener
	}
	return roleDialer
}

// LoadCableKey reads a cable key from path: the file's bytes, surrounding
// white space removed, MinCableKeySize..MaxCableKeySize of them (e.g.
// `head -c 32 /dev/urandom | base64`). The file must be a regular file
// that neither group nor others may access (mode 0600 or stricter);
// otherwise it is refused, since a key others can read proves nothing.
func LoadCableKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cable key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cable key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cable key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("cable key %s: mode %04o gives group or others access, want 0600 or stricter (chmod 600 %s)", path, perm, path)
	}
	if fi.Size() > 2*MaxCableKeySize {
		return nil, fmt.Errorf("cable key %s: a file of %d bytes, want a key of %d..%d", path, fi.Size(), MinCableKeySize, MaxCableKeySize)
	}
	b, err := io.ReadAll(io.LimitReader(f, 2*MaxCableKeySize+1))
	if err != nil {
		return nil, fmt.Errorf("cable key %s: %w", path, err)
	}
	key := bytes.TrimSpace(b)
	if err := checkCableKey(key); err != nil {
		return nil, fmt.Errorf("cable key %s: %w", path, err)
	}
	return key, nil
}

// checkCableKey checks the size of a key (nil: no key, fine).
func checkCableKey(key []byte) error {
	if key != nil && (len(key) < MinCableKeySize || len(key) > MaxCableKeySize) {
		return fmt.Errorf("%d bytes, want %d..%d", len(key), MinCableKeySize, MaxCableKeySize)
	}
	return nil
}

// Labels that start every HMAC made with a cable key, so that one made
// for anything else never passes for one of these.
const (
	tagLabel  = "tbstream cable hello v2\x00"
	authLabel = "tbstream cable auth v2\x00"
)

// helloTag is the key tag of a hello sent by the end with role sender:
// an HMAC-SHA256 with the key over the label, the role and the hello's
// first helloTaggedSize bytes. It depends on the sender's nonce only, so
// it can be replayed: it never authenticates, it only tells a listener
// which connections deserve a handshake slot (see Accept).
func helloTag(key []byte, sender cableRole, hello []byte) [cableTagSize]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(tagLabel))
	m.Write([]byte{byte(sender)})
	m.Write(hello[:helloTaggedSize])
	return [cableTagSize]byte(m.Sum(nil))
}

// cableProof is the AUTH payload sent by the end with role sender: an
// HMAC-SHA256 with the key over the label, the sender's role and both
// hello payloads, the dialer's first. Both nonces make it fresh for each
// connection; the role makes it one-way.
func cableProof(key []byte, sender cableRole, dialerHello, listenerHello []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(authLabel))
	m.Write([]byte{byte(sender)})
	m.Write(dialerHello)
	m.Write(listenerHello)
	return m.Sum(nil)
}

// handshakeHooks let a listener follow a handshake; nil hooks are not
// called.
type handshakeHooks struct {
	// reading is called when this end, its hello sent, starts to read
	// the peer's.
	reading func()
	// hello is called once the peer's hello passed its checks (with a
	// key: its tag matched); an error ends the handshake.
	hello func(nonce [cableNonceSize]byte) error
	// commit is called once the peer passed every check, before this end
	// sends its own proof (the listener's last word); an error ends the
	// handshake.
	commit func() error
}

// handshake runs the hello exchange (and, with a key, the proofs) of a
// socket cable on conn as role, within handshakeTimeout or ctx, calling
// the hooks on the way. It returns a reader holding whatever the peer
// sent after the handshake. It does not close conn.
func (h *Host) handshake(ctx context.Context, conn net.Conn, role cableRole, hooks handshakeHooks) (*handshaken, error) {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	mine := cableHello{UID: h.uid}
	rand.Read(mine.Nonce[:])
	if h.offersShm(conn) {
		mine.Flags |= helloFlagShm
	}
	if h.cableKey != nil {
		mine.Flags |= helloFlagKey
		mine.Tag = helloTag(h.cableKey, role, mine.payload())
	}
	myHello := mine.payload()
	if _, err := conn.Write(appendCableFrame(nil, cableFrame{Kind: CableHello, Payload: myHello})); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	// The handshake's frames are small: a reader of minReaderSize, not
	// the socket cable's, so strangers cost little memory.
	br := bufio.NewReaderSize(conn, minReaderSize)
	if hooks.reading != nil {
		hooks.reading()
	}
	f, err := readHandshakeFrame(br, CableHello)
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	peerHello := bytes.Clone(f.Payload)
	peer := decodeHello(peerHello)
	switch {
	case peer.UID == h.uid:
		return nil, fmt.Errorf("the peer's hello carries this host's own router UID (a mirrored hello): %w", ErrRefused)
	case h.cableKey != nil && peer.Flags&helloFlagKey == 0:
		return nil, fmt.Errorf("this end has a cable key, the peer has none: %w", ErrRefused)
	case h.cableKey == nil && peer.Flags&helloFlagKey != 0:
		return nil, fmt.Errorf("the peer requires a cable key (-cable-key), this end has none: %w", ErrRefused)
	case h.cableKey != nil:
		if want := helloTag(h.cableKey, role.peer(), peerHello); !hmac.Equal(peer.Tag[:], want[:]) {
			return nil, fmt.Errorf("the peer's hello tag does not match this end's cable key: %w", ErrRefused)
		}
	}
	if hooks.hello != nil {
		if err := hooks.hello(peer.Nonce); err != nil {
			return nil, err
		}
	}
	if h.cableKey == nil && hooks.commit != nil {
		if err := hooks.commit(); err != nil {
			return nil, err
		}
	}
	if h.cableKey != nil {
		dialerHello, listenerHello := myHello, peerHello
		if role == roleListener {
			dialerHello, listenerHello = peerHello, myHello
		}
		// The dialer proves first; the listener proves only to a dialer
		// that did.
		if role == roleDialer {
			if err := sendProof(conn, cableProof(h.cableKey, role, dialerHello, listenerHello)); err != nil {
				return nil, err
			}
		}
		f, err := readHandshakeFrame(br, CableAuth)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w (the peer hung up: it has another key, or was busy)", err)
			}
			return nil, fmt.Errorf("read proof: %w", err)
		}
		if !hmac.Equal(f.Payload, cableProof(h.cableKey, role.peer(), dialerHello, listenerHello)) {
			return nil, fmt.Errorf("the peer's proof does not match this end's cable key: %w", ErrRefused)
		}
		if hooks.commit != nil {
			if err := hooks.commit(); err != nil {
				return nil, err
			}
		}
		if role == roleListener {
			if err := sendProof(conn, cableProof(h.cableKey, role, dialerHello, listenerHello)); err != nil {
				return nil, err
			}
		}
	}
	if !stop() {
		return nil, fmt.Errorf("handshake: %w", context.Cause(ctx))
	}
	conn.SetDeadline(time.Time{})
	return &handshaken{br: br, shm: mine.Flags&peer.Flags&helloFlagShm != 0}, nil
}

// handshaken is what a handshake leaves: the reader holding what the peer
// sent after it, and whether both ends offered shared memory.
type handshaken struct {
	br  *bufio.Reader
	shm bool
}

func sendProof(conn net.Conn, proof []byte) error {
	if _, err := conn.Write(appendCableFrame(nil, cableFrame{Kind: CableAuth, Payload: proof})); err != nil {
		return fmt.Errorf("send proof: %w", err)
	}
	return nil
}

// readHandshakeFrame reads one frame, which must be of kind want.
func readHandshakeFrame(br cableReader, want CableKind) (cableFrame, error) {
	f, err := readCableFrame(br)
	if err == nil && f.Kind != want {
		err = fmt.Errorf("frame of kind %d during the handshake, want %d: %w", f.Kind, want, ErrMalformed)
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return f, err
}

// socketReader is the reader a socket cable's read loop uses from now
// on: the handshake's, if it holds frames the peer sent right after, so
// none is lost; otherwise a fresh one of the cable's size.
func socketReader(conn net.Conn, hs *bufio.Reader) *bufio.Reader {
	if n := hs.Buffered(); n > 0 {
		early, _ := hs.Peek(n)
		return bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), socketBuffer)
	}
	return bufio.NewReaderSize(conn, socketBuffer)
}
