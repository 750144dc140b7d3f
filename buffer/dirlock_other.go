//go:build !(linux || darwin)

package buffer

// lockDir is not available here: clean-ups that need Badger's directory
// lock are skipped, and Badger does them itself.
func lockDir(string) (unlock func(), ok bool) { return nil, false }
