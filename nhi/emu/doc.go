// Package emu is an emulated NHI and host router behind the nhi.Device
// interface, and the cables that join emulated hosts: the USB4 fabric for
// machines without USB4 hardware.
//
// It owns the NHI register semantics (ring blocks, options, doorbells,
// CAPS, interrupt enable, IVR, throttling, notify status, host router
// reset), a DMA engine that reads descriptors from driver memory and
// writes completions back, the host router's config spaces and routing,
// E2E credits, hot-plug events and cables. It does not know the driver's
// internals: the driver sees only registers, DMA memory and vectors.
//
// # Host router
//
//	adapter 0      control adapter; router space: ROUTER_CS_0 vendor/device,
//	               ROUTER_CS_1 max adapter 5, ROUTER_CS_7..8 the router UID
//	adapters 1..4  lane adapters (type TB_TYPE_PORT), max in/out HopID 19
//	adapter 5      NHI adapter (TB_TYPE_NHI), max in/out HopID = rings-1
//
// Path entries (TB_CFG_HOPS, two dwords per input HopID) route frames: a
// TX ring r follows the entry of the NHI adapter at HopID r to a lane
// adapter and output HopID; a frame arriving on a lane adapter with HopID
// h follows that adapter's entry h to the NHI adapter, whose output HopID
// is the RX ring. No valid entry, no delivery: the frame is dropped and
// counted at the receiving router (Counters). A non-E2E TX ring with no
// path or no cable drops and counts at the sender.
//
// Control packets (ring 0) for route 0 are answered by the router (config
// READ/WRITE, plug acknowledgements). Packets for the route at which the
// peer appears cross the cable and arrive on the peer's ring 0 with the
// route rewritten to how the peer sees this host (and the CRC
// recomputed), so both sides' XDomain code finds the other by its route.
// The peer's route is configurable per cable (Port.PeerRoute): host2 may
// see host1 at 0x1 while host1 sees host2 at 0x503. Plug and unplug raise
// an EVENT on ring 0 from the router one level above the peer (route
// 0x503 → router 0x3, adapter 5). When RX ring 0 is (re)started, the plug
// EVENTs of cables already plugged are sent again, so software that starts
// after the cable still learns of the peer.
//
// # E2E flow control
//
// An RX ring with E2E grants the sender one credit per posted descriptor,
// on the cable, for the HopID of its RX path (in batches: once a quarter
// of the ring is re-posted, or at once when the sender holds less than
// half the ring); credits exist only while
// that path, the ring and the cable do. A TX ring with E2E sends a frame
// only with a credit for its output HopID, otherwise the frame waits
// posted. A receiver that stops reading therefore fills its RX ring, the
// sender's TX ring then fills, and nothing is lost; memory stays bounded
// by the ring sizes. Disabling the RX path or ring withdraws the credits
// (a CREDIT_RESET), and frames already on the way are dropped and counted
// at the receiver.
//
// Simplification: the driver programs each RX ring's E2E TX hop, but the
// emulator returns credits out of band on the cable, keyed by the data
// path's HopID, instead of through that TX ring's path. Credits therefore
// do not depend on the order in which the two hosts enable their paths
// (priming RX before or after path set-up both work).
//
// # Cables
//
// ConnectInProcess joins two hosts in one process: a TX frame is copied
// straight from the sender's TX slot into the receiver's RX slot by the
// sender's DMA engine. Interrupts run the driver's handler on the
// goroutine that raises them (nhi.InlineDevice): a frame reaching an
// idle ring wakes its blocked reader with no goroutine in between. The
// engine is a goroutine per host; when it is idle,
// a TX doorbell starts the transfer on the writer's goroutine instead of
// waking it, and RX interrupts are raised once per batch of delivered
// frames. Socket cables (Dial, Accept; unix or TCP, TCP on loopback
// unless an address is given explicitly) carry frames with this framing,
// on the socket or, between two hosts on one machine that both offer it,
// through shared memory (shm.go), every field big-endian:
//
//	offset size field
//	0      1    kind: 1 HELLO, 2 DATA, 3 CONTROL, 4 CREDIT, 5 CREDIT_RESET, 6 UNPLUG, 7 AUTH, 8 SHM
//	1      1    SOF PDF << 4 | EOF PDF      (DATA, CONTROL: SOF == EOF == type; else 0)
//	2      2    HopID, 0..2047              (DATA, CREDIT, CREDIT_RESET; else 0)
//	4      2    payload length
//	6      2    reserved, 0
//	8      n    payload
//
//	kind          payload
//	HELLO         80 bytes (below); the first frame each way
//	AUTH          32 bytes: the handshake's proof of the key (below)
//	DATA          1..4096 bytes, one DMA frame
//	CONTROL       4..256 bytes, a multiple of 4: a control frame with its CRC
//	CREDIT        4 bytes: u32 credits (1..4096) for the HopID
//	CREDIT_RESET  none: every credit for the HopID is withdrawn
//	UNPLUG        none: orderly disconnect
//	SHM           4 bytes: u32 size of each shared-memory ring, 0 declines
//
//	HELLO offset size field
//	0            4    magic "TBSC"
//	4            2    version, 2 (CableVersion)
//	6            2    flags: bit 0 KEY, the sender holds a cable key; bit 1
//	                  SHM, the sender (on a unix socket) offers shared memory;
//	                  others 0
//	8            8    router UID
//	16           32   nonce, random for each connection
//	48           32   key tag: HMAC-SHA256(key, "tbstream cable hello v2\0" ||
//	                  role || bytes 0..47), role 'D' dialer or 'L' listener;
//	                  zero without KEY
//
// Version 1 (16-byte HELLO: magic, version, reserved, UID; no AUTH) is
// refused: a HELLO is read up to its version first, so an older peer gets
// "hello version 1, want 2" rather than a length error.
//
// PlugStream runs the same handshake and framing over a byte stream the
// caller joined by other means: a USB cable's bulk pipe (package
// usbcable), where the gadget end takes the listener's role and the USB
// host end the dialer's. The framing is unchanged; USB transfer
// boundaries are not frame boundaries.
//
// Any other kind, a length outside its range, nonzero reserved bits or a
// HELLO or AUTH after the handshake is malformed: the cable closes with
// one log line, which both hosts see as an unplug. Writes are buffered and
// flushed after every pass, so frames travel in batches as a pass produces
// them: by the engine, or by the goroutine that rang a doorbell (a TX pass
// made inline, the credits an RX doorbell granted), which holds no ring
// lock then.
//
// # Cable handshake
//
// Each host may hold a shared cable key (Config.CableKey, LoadCableKey:
// a file of mode 0600 or stricter). The handshake, within 2 s:
//
//	dialer                          listener
//	HELLO (nonce Nd, tag)  ──────►  ◄──────  HELLO (nonce Nl, tag)
//	AUTH  HMAC(key, "tbstream cable auth v2\0" || 'D' || HELLO_d || HELLO_l) ──►
//	                                 checks it, then
//	◄────── AUTH  HMAC(key, "tbstream cable auth v2\0" || 'L' || HELLO_d || HELLO_l)
//
// (HELLO_d, HELLO_l: the 80-byte payloads.) Without keys on both ends the
// hellos are all: each end plugs in once it has the other's. A key on one
// end only, a tag or a proof that does not match, a peer's hello that
// carries this host's own router UID (its own hello mirrored, or relayed
// from another of its connections) are refused (ErrRefused) by both ends,
// before anything is plugged in: nothing reaches the router or the rings
// before the handshake is over. Both nonces make each proof good for one
// connection; the role makes it one-way, so a proof sent back to its
// maker does not pass. The listener proves only to a dialer that did, so
// a stranger gets nothing made with the key but replayable hello tags.
// Tags prove nothing (they cover one nonce only and can be replayed);
// they tell a listener which connections deserve a handshake slot, and a
// host remembers the last 1024 tagged nonces it saw, so a replayed hello
// gets no slot.
//
// # Shared memory
//
// When both hellos carry SHM, the listener answers after the handshake
// (its proof, with a key) with a SHM frame whose ring size is not 0 and
// passes a memfd with it (SCM_RIGHTS): a control page and two rings of
// that size, listener → dialer and dialer → listener, each mapped twice
// back to back so a frame that wraps is contiguous. The memfd is sealed
// against shrinking and growing; the dialer maps only one of the size
// announced that carries the seal. From then on each end writes its
// frames into its ring and publishes them at each flush, and waits (for
// bytes, or room) by polling for shmSpin, then on a futex the other side
// wakes only when the sleeping flag is set. Nothing else is written to
// the socket; its end (the peer closed or died) ends the cable once the
// frames the peer published are delivered. A listener that cannot make
// the memfd sends ring size 0 and both stay on the socket; either end
// that fails to set one up offers no more. Positions a peer stores that
// cannot be (more consumed than written) close the cable as malformed;
// garbage in the ring is refused by the framing as on a socket.
//
// # Listening
//
// Accept handshakes connections concurrently: up to 64 wait for their
// hello (a new connection drops the oldest of them already blocked in
// reading it, never one whose handshake has not run yet), and up to 4
// whose hello passed (with a key: carries a valid tag) finish the
// handshake (a fifth drops the oldest). Strangers holding connections
// open or opening many thus only drop each other; a flood that keeps the
// listen backlog full can still delay the peer's connect, which it
// retries (the kernel drops its SYN, or a unix connect fails with
// EAGAIN). Refused connections are counted (Counters.CableRefused) and
// logged at most once a second, the others counted in a summary line.
// While a cable is plugged in nothing is accepted: a peer that dials then
// waits in the listen backlog until the cable ends and the caller accepts
// again (the daemon re-accepts at unplug); its handshake times out
// meanwhile, and it dials again.
// A TCP listener beyond loopback needs a key (ErrNeedKey); ListenUnix
// creates the socket with mode 0600 (only its owner, root for the daemon,
// can connect).
//
// The key authenticates the peer at plug-in; it does not protect what
// follows: frames are neither encrypted nor authenticated, and whoever
// can read or alter the connection (a TCP path beyond loopback) can read
// the streams or take the cable over after the handshake. Use a network
// you trust or a tunnel.
//
// What is not modelled: splitting frames into 256-byte tunnelled packets,
// link-level (path) credits, lane bonding, intermediate device routers
// (a peer at 0x503 is reached through lane adapter 3 directly) and
// counters space. The credit registers read as a real host router's do
// (lane adapters: ADP_CS_4 total buffers 60, 2 credits on the control
// path at HopID 0), so path set-up computes its credits as on hardware;
// the credits written into path entries are stored, not enforced. A path
// entry's pending bit always reads 0.
package emu
