//go:build !linux

package quickack

// Supported reports whether Set does anything here: TCP_QUICKACK is
// Linux-only.
const Supported = false

// Set does nothing where TCP_QUICKACK does not exist.
func Set(uintptr) {}
