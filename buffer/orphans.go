package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"
)

// removeOrphanTables deletes the table files (*.sst) of dir that its
// MANIFEST does not reference: the output of a compaction or a memtable
// flush that a crash cut short. Badger deletes them itself, but only
// after it has created a new memtable file and written its header
// through a memory-mapped page; when a crash during a compaction left
// the disk full (the half-written tables took the last of it), that
// write kills the process with SIGBUS again, before the tables that
// hold the space are gone, and every restart dies the same way. Doing
// Badger's clean-up first gives the space back before Badger writes.
// It removes exactly what Badger would (revertToManifest), from the
// manifest as Badger replays it.
func removeOrphanTables(dir string, bopts badger.Options) (n int, freed int64, err error) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("open manifest: %w", err)
	}
	mf, _, err := badger.ReplayManifestFile(f, bopts.ExternalMagicVersion, bopts)
	f.Close()
	if err != nil {
		// Badger will say what is wrong with it; remove nothing.
		return 0, 0, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("read dir: %w", err)
	}
	for _, e := range entries {
		id, ok := table.ParseFileID(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		if _, ok := mf.Tables[id]; ok {
			continue
		}
		var size int64
		if info, err := e.Info(); err == nil {
			size = info.Size()
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return n, freed, fmt.Errorf("remove orphan table %s: %w", e.Name(), err)
		}
		n++
		freed += size
	}
	return n, freed, nil
}

// errNoManifest is returned by Open for a directory that holds tables
// but no MANIFEST.
var errNoManifest = errors.New("table files (*.sst) but no MANIFEST: Badger would open it as a new store and delete them, with the hooks and dead letters they hold; restore the MANIFEST with the tables it came with, or move the directory aside to start with an empty store")

// checkManifest refuses a directory with table files and no MANIFEST.
// A crash does not leave one (Badger writes the MANIFEST before its first
// table, and rewrites it by renaming a complete copy over it): a file
// lost to a damaged file system or a partial copy or restore does.
func checkManifest(dir string) error {
	_, err := os.Stat(filepath.Join(dir, badger.ManifestFilename))
	if !errors.Is(err, fs.ErrNotExist) {
		return nil // there, or Badger says what is wrong with it
	}
	tables, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(tables) == 0 {
		return nil
	}
	return fmt.Errorf("%d %w", len(tables), errNoManifest)
}
