//go:build !linux

package main

import "fmt"

type memCgroup struct{ dir string }

func newMemCgroup(string, int64) (*memCgroup, error) {
	return nil, fmt.Errorf("%w: memory cgroups are Linux only", errNoCgroup)
}

func (c *memCgroup) procsFile() string    { return "" }
func (c *memCgroup) peak() (int64, error) { return 0, errNoCgroup }
func (c *memCgroup) remove() error        { return nil }
func dropPageCache(string) error          { return nil }
