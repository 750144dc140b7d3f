//go:build linux || darwin

package buffer

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

// TestFreeSpaceOfTheFileSystem: without a FreeBytes for tests, the free
// space is the data directory's file system's, in bytes: a reserve of
// half of it leaves room for captures, one of twice it refuses them.
func TestFreeSpaceOfTheFileSystem(t *testing.T) {
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs: %v", err)
	}
	avail := int64(st.Bavail) * int64(st.Bsize)
	s := openStore(t, dir, Options{MinFreeBytes: avail / 2})
	put(t, s, "http://a.test/", `{"n":1}`)
	s = openStore(t, t.TempDir(), Options{MinFreeBytes: 2 * avail})
	if err := s.Put(context.Background(), &Hook{Target: "http://a.test/", Body: []byte(`{}`)}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("put with a reserve of twice the free space: err = %v, want ErrDiskFull", err)
	}
}
