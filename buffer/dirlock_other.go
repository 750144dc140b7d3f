//go:build !(linux || darwin)

package buffer

import "errors"

// lockDir is not available here (errors.ErrUnsupported): clean-ups that
// need Badger's directory lock are skipped, and Badger does them itself.
func lockDir(string) (unlock func(), err error) { return nil, errors.ErrUnsupported }
