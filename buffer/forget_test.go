package buffer

import (
	"errors"
	"fmt"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// countKeys counts the keys on disk under prefix.
func countKeys(tb testing.TB, s *Store, prefix []byte) int {
	tb.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestForgetKeepsUndeletedHooksToTheirRecord: a batch too large for
// its end's transaction has the rest of its hooks deleted right after
// it; when that fails (writes blocked by a compaction that gives space
// back, an I/O error), the next start deletes them, as they sit below
// the target's head. That needs the target's record: a target forgotten
// while running, its record deleted by a later batch's end, left them
// on disk for good, bodies and all, and no start deleted them.
func TestForgetKeepsUndeletedHooksToTheirRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://big.test/"
	// More deletes than one transaction takes (Badger's count limit,
	// about 13,000 with the store's memtable size).
	const chunks, chunk = 32, 500
	for c := range chunks {
		hooks := make([]*Hook, chunk)
		for i := range hooks {
			hooks[i] = &Hook{Target: url, Method: "POST", Body: fmt.Appendf(nil, `{"n":%d}`, c*chunk+i), Received: s.now()}
		}
		if err := s.submit(&putRequest{hooks: hooks, size: int64(chunk * 10), done: make(chan error, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	id := statusOf(t, s, url).ID
	b, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var unblock func()
	restore := wrapCommits(t, func(txn *badger.Txn, commit func(*badger.Txn) error) error {
		err := commit(txn)
		if unblock == nil {
			unblock = blockWrites(t, s) // the deletion of the rest fails
		}
		return err
	})
	if _, err := s.Ack(id, b.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	restore()
	unblock()
	left := countKeys(t, s, queuePrefix(id))
	if left == 0 {
		t.Fatal("every hook of the batch deleted with its end: the test needs a batch too large for one transaction")
	}
	// Another batch's end, which deletes the records of forgotten targets.
	put(t, s, "http://b.test/", `{"n":0}`)
	deliverAll(t, s, "http://b.test/")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{GCInterval: -1})
	if n := countKeys(t, s, queuePrefix(id)); n != 0 {
		t.Errorf("after a restart: %d delivered hooks of target %d still on disk (of %d left by the failed deletion), want none", n, id, left)
	}
	if _, err := s.Target(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("after a restart: target %d: %v, want it forgotten", id, err)
	}
}

// TestUnreadableLastHookForgetsTarget: a target whose last hooks are
// dead-lettered as unreadable has nothing left, and is forgotten as one
// whose last batch ended is (the API answers 404 for it); it stayed in
// memory until the next start.
func TestUnreadableLastHookForgetsTarget(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		t.Run(fmt.Sprintf("in-flight=%t", inFlight), func(t *testing.T) {
			s := openStore(t, t.TempDir(), Options{})
			put(t, s, unreadableURL, bigBody(0))
			id := statusOf(t, s, unreadableURL).ID
			if inFlight {
				if _, err := s.Claim(id, 0, 0); err != nil {
					t.Fatal(err)
				}
			}
			failReads(t, bigBody(0), fmt.Errorf("injected: %w", errCorrupt))
			if _, err := s.Claim(id, 0, 0); !errors.Is(err, ErrNoHooks) {
				t.Fatalf("claim: %v, want ErrNoHooks", err)
			}
			if ds, err := s.ListDeadLetters(DeadLetterFilter{}, false); err != nil || len(ds) != 1 {
				t.Fatalf("dead letters: %d, %v; want the unreadable hook's", len(ds), err)
			}
			if st, err := s.Target(id); !errors.Is(err, ErrNotFound) {
				t.Errorf("target with nothing left: %+v, %v; want ErrNotFound", st, err)
			}
			put(t, s, unreadableURL, bigBody(1))
			if st := statusOf(t, s, unreadableURL); st.ID == id || st.Pending != 1 {
				t.Errorf("captured again: id %d (was %d), %d pending; want a new id and 1 pending", st.ID, id, st.Pending)
			}
		})
	}
}
