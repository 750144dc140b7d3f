//go:build linux || darwin

package buffer

import "syscall"

// freeBytes is the space of dir's file system that an unprivileged
// process may still write.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
