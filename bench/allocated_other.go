//go:build !unix

package main

import "io/fs"

// allocated is the disk space a file takes; without block counts, its
// size.
func allocated(info fs.FileInfo) int64 { return info.Size() }
