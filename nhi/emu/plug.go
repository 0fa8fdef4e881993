package emu

// Cables over a byte stream the caller established itself (a USB bulk
// pipe, see package usbcable): the same handshake and framing as socket
// cables.

import (
	"context"
	"fmt"
	"net"
)

// PlugStream runs the cable handshake on conn, a byte stream already
// joined to the peer by other means than Dial or Accept (a USB cable's
// bulk pipe), as the dialing end (dialer) or the listening end, and plugs
// the cable in at port. The two ends must take opposite roles. conn
// carries the framing of the package doc unchanged; it needs working
// deadlines (the handshake and the UNPLUG at close use them). The cable
// owns conn from then on; on error PlugStream closes it.
func (h *Host) PlugStream(ctx context.Context, conn net.Conn, dialer bool, port Port) (*Cable, error) {
	port, err := port.normalize()
	if err != nil {
		conn.Close()
		return nil, err
	}
	role := roleListener
	if dialer {
		role = roleDialer
	}
	hs, err := h.handshake(ctx, conn, role, handshakeHooks{}) // no shared memory: not a unix socket
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("emu plug: handshake: %w", err)
	}
	c := h.newSocketCable(conn, port, nil, role)
	if err := h.attach(c); err != nil {
		conn.Close()
		return nil, err
	}
	h.startSocketCable(c, hs.br)
	return c, nil
}
