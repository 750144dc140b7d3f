//go:build !linux

package proxy

// quickackSupported reports whether setQuickack does anything here:
// TCP_QUICKACK is Linux-only.
const quickackSupported = false

func setQuickack(uintptr) {}
