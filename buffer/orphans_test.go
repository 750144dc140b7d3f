package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// TestOpenRemovesOrphanTables: a crash in a compaction leaves the tables
// it was writing, which the MANIFEST does not name; when they took the
// last of the disk, Badger's own clean-up comes too late (after it
// writes a new memtable: SIGBUS). Open removes them first, and keeps
// every table the MANIFEST names.
func TestOpenRemovesOrphanTables(t *testing.T) {
	dir := t.TempDir()
	tables := storeWithATable(t, dir)
	orphan := filepath.Join(dir, "999999.sst")
	if err := os.WriteFile(orphan, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, Options{})
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("orphan table still there: %v", err)
	}
	for _, tb := range tables {
		if _, err := os.Stat(tb); err != nil {
			t.Fatalf("table named by the MANIFEST removed: %v", err)
		}
	}
	if st := s.Stats(); st.PendingHooks != 1 {
		t.Fatalf("pending hooks = %d, want 1", st.PendingHooks)
	}
}

// TestReserveGrowsWithTables: the reserve grows with Badger's tables (a
// compaction needs room for what it rewrites), and Check says the disk
// is short before any capture is refused.
func TestReserveGrowsWithTables(t *testing.T) {
	const reserve = 64 << 10
	s := openStore(t, t.TempDir(), Options{
		MinFreeBytes: reserve,
		FreeBytes:    func(string) (int64, error) { return reserve + 1<<20, nil },
		LSMBytes:     func() int64 { return 2 << 20 },
	})
	if err := s.Check(); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("check with 1 MiB above the fixed reserve and 2 MiB of tables = %v, want ErrDiskFull", err)
	}
	err := s.Put(context.Background(), &Hook{Target: "http://a.test/", Body: []byte(`{}`)})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("put = %v, want ErrDiskFull", err)
	}
	if free, res, ok := s.Space(); !ok || free != reserve+1<<20 || res != reserve+2<<20 {
		t.Errorf("Space = %d free, %d reserve, %v; want %d, %d, true", free, res, ok, reserve+1<<20, reserve+2<<20)
	}
}

// TestOrphanCleanupWaitsForTheLock: a second Open of a directory that a
// running store holds removes nothing: the tables that store is writing
// are not in its MANIFEST yet either.
func TestOrphanCleanupWaitsForTheLock(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir, Options{})
	writing := filepath.Join(dir, "999999.sst")
	if err := os.WriteFile(writing, make([]byte, 1<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(Options{Dir: dir}); err == nil {
		_ = s.Close()
		t.Fatal("a second Open of a directory in use succeeded")
	}
	if _, err := os.Stat(writing); err != nil {
		t.Fatalf("the running store's table was removed by a second Open: %v", err)
	}
}

// TestMemtableCleanupWaitsForTheLock: Badger creates a memtable file
// and only then sizes it, so a running store's newest memtable is empty
// for a moment; a second Open of its directory (a new pod started
// before the old one stopped, say) must not remove it: the hooks then
// written to it would be in no file after a crash.
func TestMemtableCleanupWaitsForTheLock(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir, Options{})
	creating := filepath.Join(dir, "99999.mem")
	if err := os.WriteFile(creating, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(Options{Dir: dir}); err == nil {
		_ = s.Close()
		t.Fatal("a second Open of a directory in use succeeded")
	}
	if _, err := os.Stat(creating); err != nil {
		t.Fatalf("the running store's memtable was removed by a second Open: %v", err)
	}
}

// TestOpenRefusesTablesWithoutManifest: table files without a MANIFEST
// are not a crash's leftovers (Badger writes the MANIFEST before any
// table) but a damaged or partly copied directory. Badger would open it
// as a new store and delete every table, with the hooks and dead letters
// in them; Open refuses, names the directory, and deletes nothing.
func TestOpenRefusesTablesWithoutManifest(t *testing.T) {
	dir := t.TempDir()
	tables := storeWithATable(t, dir)
	if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: dir})
	if err == nil {
		pending := s.Stats().PendingHooks
		_ = s.Close()
		t.Fatalf("open without a MANIFEST: nil error, want a refusal (pending hooks were %d)", pending)
	}
	if msg := err.Error(); !strings.Contains(msg, dir) || !strings.Contains(msg, "MANIFEST") {
		t.Fatalf("open without a MANIFEST: %q, want the directory and MANIFEST named", msg)
	}
	for _, tb := range tables {
		if _, err := os.Stat(tb); err != nil {
			t.Fatalf("table removed: %v", err)
		}
	}
}

// TestOpenRefusesANewerStore: a store that a later version wrote (its
// format mark above storeFormat) is refused at Open, naming why, rather
// than its records taken for damage and dead-lettered without bodies. A
// store without the mark, as earlier versions left it, gets one.
func TestOpenRefusesANewerStore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	put(t, s, "http://r.example/a", `{"n":1}`)
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(keyFormat) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{}) // unmarked: marked now
	if got := formatMark(t, s); got != storeFormat {
		t.Fatalf("format mark %d, want %d", got, storeFormat)
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(keyFormat, binary.AppendUvarint(nil, storeFormat+1))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if s, err := Open(Options{Dir: dir}); !errors.Is(err, errNewerStore) {
		if err == nil {
			_ = s.Close()
		}
		t.Fatalf("open a store of format %d: %v, want %v", storeFormat+1, err, errNewerStore)
	}
}

// TestOpenMarksAnOlderStore: a store of an earlier format is marked as
// of storeFormat when this version opens it, as this version writes its
// records there from then on: the version that wrote the earlier format,
// started on it again, must refuse it rather than take those records for
// damage. (The mark was set only on a store without one, so a store
// went back to its earlier version with the later one's records in it.)
func TestOpenMarksAnOlderStore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	h := put(t, s, "http://r.example/a", `{"n":1}`)
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(keyFormat, binary.AppendUvarint(nil, storeFormat-1))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	if got := formatMark(t, s); got != storeFormat {
		t.Fatalf("format mark of a store of format %d after Open: %d, want %d", storeFormat-1, got, storeFormat)
	}
	b, err := s.Claim(statusOf(t, s, h.Target).ID, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Hooks) != 1 || b.Hooks[0].ID != h.ID {
		t.Fatalf("claimed %d hooks, want the stored one", len(b.Hooks))
	}
}

// formatMark reads the store's format mark.
func formatMark(t *testing.T, s *Store) uint64 {
	t.Helper()
	var f uint64
	if err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyFormat)
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			f, _ = binary.Uvarint(v)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return f
}

// storeWithATable makes a store in dir holding one hook, closed, and
// returns its table files (Close flushes the memtable to one).
func storeWithATable(t *testing.T, dir string) []string {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "http://a.test/", `{"n":1}`)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table after close")
	}
	return tables
}
