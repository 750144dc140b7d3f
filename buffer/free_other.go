//go:build !(linux || darwin)

package buffer

import "errors"

// freeBytes is not measured here: the free-space check is skipped.
func freeBytes(string) (int64, error) { return 0, errors.ErrUnsupported }
