//go:build !unix

package buffer

import "io/fs"

// allocated returns the length of fi's file: this platform does not
// report the blocks a file occupies.
func allocated(fi fs.FileInfo) int64 { return fi.Size() }
