//go:build unix

package buffer

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// filesOnDisk sums what the files in dir with each extension occupy, as du
// counts it: their allocated 512-byte blocks.
func filesOnDisk(tb testing.TB, dir string) map[string]int64 {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	sums := map[string]int64{}
	for _, e := range entries {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, e.Name()), &st); err != nil {
			tb.Fatal(err)
		}
		sums[filepath.Ext(e.Name())] += int64(st.Blocks) * 512
	}
	return sums
}

// TestDiskUsageCountsTheFiles: DiskUsage reports what the tables and
// memtable logs (lsm) and the value log (vlog) occupy on disk, both with
// a memtable being written and after a restart has made it a table.
// Badger's DB.Size, which it used to report, stays 0, 0 with Badger's
// metrics off.
func TestDiskUsageCountsTheFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{GCInterval: -1})
	const large = 3
	big := strings.Repeat("x", 100<<10) // over the value threshold: into the value log
	for i := range 50 {
		put(t, s, "http://a.test/hook", `{"small":true}`)
		if i < large {
			put(t, s, "http://a.test/hook", `"`+big+`"`)
		}
	}
	check := func(when string, wantTable bool) {
		t.Helper()
		lsm, vlog := s.DiskUsage()
		files := filesOnDisk(t, dir)
		if want := files[".sst"] + files[".mem"]; lsm != want || lsm == 0 {
			t.Errorf("%s: lsm %d bytes, want the tables' and memtable logs' %d (sst %d, mem %d), not 0",
				when, lsm, want, files[".sst"], files[".mem"])
		}
		if want := files[".vlog"]; vlog != want || vlog < large*int64(len(big)) {
			t.Errorf("%s: vlog %d bytes, want the value log files' %d, at least the %d bytes of large bodies",
				when, vlog, want, large*len(big))
		}
		if wantTable && files[".sst"] == 0 {
			t.Errorf("%s: no table on disk; the test no longer covers tables", when)
		}
	}
	check("memtable in use", false)

	// Closing writes the memtable out as a table.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{GCInterval: -1})
	check("after a restart", true)
}

// TestDiskUsageInMemory: an in-memory store has nothing on disk.
func TestDiskUsageInMemory(t *testing.T) {
	s, err := Open(Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put(t, s, "http://a.test/hook", `{}`)
	if lsm, vlog := s.DiskUsage(); lsm != 0 || vlog != 0 {
		t.Errorf("DiskUsage = %d, %d; want 0, 0", lsm, vlog)
	}
}
