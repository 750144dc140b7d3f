//go:build linux

package quickack

import "syscall"

// Supported reports whether Set does anything here.
const Supported = true

// Set turns TCP_QUICKACK on for the socket fd. It is a plain function,
// not a closure, so syscall.RawConn.Control does not allocate per call.
func Set(fd uintptr) {
	_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}
