//go:build !linux

package main

import "net"

// quickack does nothing where TCP_QUICKACK does not exist.
func quickack(*net.TCPConn) {}
