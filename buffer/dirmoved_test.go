package buffer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestDirectoryMovedRefusesHooks: once the data directory is removed
// from its path (an operator's rm -rf, a volume swapped), or another
// directory stands in its place, Badger would go on writing its open
// files, and each hook acknowledged then would be gone at the next
// start, which opens what is at the path. Put and Check refuse instead,
// and both pass again once the directory is back.
func TestDirectoryMovedRefusesHooks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	aside := dir + ".aside"
	s := openStore(t, dir, Options{GCInterval: -1})
	const url = "http://a.test/"
	put(t, s, url, `{"n":1}`)
	refused := func(when string) {
		t.Helper()
		if err := s.Put(context.Background(), &Hook{Target: url, Method: "POST", Body: []byte(`{"n":2}`)}); !errors.Is(err, ErrDirMoved) {
			t.Errorf("%s: put = %v, want ErrDirMoved", when, err)
		}
		if err := s.Check(); !errors.Is(err, ErrDirMoved) {
			t.Errorf("%s: check = %v, want ErrDirMoved", when, err)
		}
	}

	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	refused("directory moved away")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	refused("another directory in its place")

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(aside, dir); err != nil {
		t.Fatal(err)
	}
	// Ready again before any capture: an app that saw the sidecar
	// unready sends none to clear the refusal.
	if err := s.Check(); err != nil {
		t.Errorf("check with the directory back: %v", err)
	}
	put(t, s, url, `{"n":3}`)
	if st := s.Stats(); st.PendingHooks != 2 {
		t.Errorf("%d hooks pending, want the 2 put while the directory was in place", st.PendingHooks)
	}
}

// TestDirectoryEmptiedRefusesHooks: a data directory that is a mount
// point (a container's volume) cannot be removed, but rm -rf on it
// removes every file in it; the directory stays the one opened, and
// Badger would go on writing its open files, which no start finds.
// Put and Check refuse as for a directory removed.
func TestDirectoryEmptiedRefusesHooks(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{GCInterval: -1})
	const url = "http://127.0.0.1:1/"
	put(t, s, url, `{"n":1}`)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(context.Background(), &Hook{Target: url, Method: "POST", Body: []byte(`{"n":2}`)}); !errors.Is(err, ErrDirMoved) {
		t.Errorf("put = %v, want ErrDirMoved", err)
	}
	if err := s.Check(); !errors.Is(err, ErrDirMoved) {
		t.Errorf("check = %v, want ErrDirMoved", err)
	}
}
