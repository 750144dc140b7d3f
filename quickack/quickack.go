// Package quickack turns TCP_QUICKACK on, so that Linux acknowledges what
// a connection receives at once instead of delaying the ACK by up to
// 40 ms. A peer that writes an HTTP message in two small segments with
// Nagle's algorithm on (python's urllib3 on proxy connections, python's
// http.server and wsgiref answering) holds the second until the first is
// acknowledged, so a delayed ACK stalls every message on a kept-alive
// connection. Linux clears the flag by itself, whenever the connection
// sends right after it received: it must be set again after each write.
package quickack

import "net"

// On turns TCP_QUICKACK on for c, when c is a TCP connection and the
// system has the option; otherwise it does nothing.
func On(c net.Conn) {
	if !Supported {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			_ = raw.Control(Set)
		}
	}
}
