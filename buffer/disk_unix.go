//go:build unix

package buffer

import (
	"io/fs"
	"syscall"
)

// allocated returns the bytes fi's file occupies on disk: its allocated
// blocks, which for a sparse file are far fewer than its length.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512 // st_blocks counts 512-byte units whatever the block size
	}
	return fi.Size()
}
