//go:build linux || darwin

package buffer

import (
	"os"
	"syscall"
)

// lockDir takes the lock Badger takes on its directory (flock), for a
// clean-up before Badger opens it. It fails when another process holds it
// (Badger's open will then fail with that error) or it cannot be taken.
// unlock releases it.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}
