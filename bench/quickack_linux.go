package main

import (
	"net"
	"syscall"
)

// quickack re-arms TCP_QUICKACK on c. python's urllib3 leaves Nagle's
// algorithm on for proxy connections and writes headers and body apart,
// so the body waits for the server's delayed ACK (~40 ms) unless the
// server acknowledges at once; Linux clears the flag by itself, so it is
// set again around every read. hookproxy does the same; the
// benchmark's own servers do too, or python's figures through them would
// measure the stall and not the server.
func quickack(c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
