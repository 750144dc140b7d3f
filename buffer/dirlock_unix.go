//go:build linux || darwin

package buffer

import (
	"os"
	"syscall"
)

// lockDir takes the lock Badger takes on its directory (flock), for a
// clean-up before Badger opens it; ok is false when another process
// holds it (Badger's open will then fail with that error) or it cannot
// be taken. unlock releases it.
func lockDir(dir string) (unlock func(), ok bool) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, false
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, true
}
