//go:build linux

package proxy

import "syscall"

// quickackSupported reports whether setQuickack does anything here.
const quickackSupported = true

// setQuickack turns TCP_QUICKACK on for the socket fd. It is a plain
// function, not a closure, so RawConn.Control does not allocate per read.
func setQuickack(fd uintptr) {
	_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}
