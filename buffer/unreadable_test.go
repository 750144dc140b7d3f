package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// unreadableURL is the target of the damaged stores below.
const unreadableURL = "http://r.example/hooks"

// bigBody is hook n's body: 70 kB for every tenth hook (n%10 == 5), so
// that Badger keeps it in the value log, and a few bytes for the others.
func bigBody(n int) string {
	if n%10 != 5 {
		return fmt.Sprintf(`{"n":%d}`, n)
	}
	return fmt.Sprintf(`{"n":%d,"pad":"%s"}`, n, strings.Repeat(string(rune('a'+n/10)), 70<<10))
}

// damagedStore captures hooks 0-29 for unreadableURL in dir, hooks 0-9
// and 10-29 in two runs of the store (so that Badger writes them to two
// value-log files: it starts a new one at every open), claims a batch of
// the first inFlight hooks when inFlight > 0, and closes the store. It
// then damages the value log as a disk or a careless operator would:
// one byte of hook 5's body flipped in the first file (its checksum
// fails), and the second file cut short in the middle of hook 15's body
// (the pointers of hooks 15 and 25 reach past its end). It returns the
// ids of the damaged hooks and the id of the batch claimed.
func damagedStore(t *testing.T, dir string, inFlight int) (damaged []string, batchID string) {
	t.Helper()
	var ids []string
	for run, hooks := range [][2]int{{0, 10}, {10, 30}} {
		s := openStore(t, dir, Options{GCInterval: -1})
		for n := hooks[0]; n < hooks[1]; n++ {
			ids = append(ids, put(t, s, unreadableURL, bigBody(n)).ID)
		}
		if run == 1 && inFlight > 0 {
			b, err := s.Claim(statusOf(t, s, unreadableURL).ID, inFlight, 0)
			if err != nil {
				t.Fatal(err)
			}
			batchID = b.ID
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(vlogs)
	at := func(file string, n int) int64 {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, []byte(bigBody(n)))
		if i < 0 {
			t.Fatalf("hook %d's body is not in %s", n, file)
		}
		return int64(i)
	}
	if len(vlogs) < 2 {
		t.Fatalf("value-log files: %v, want two at least", vlogs)
	}
	f, err := os.OpenFile(vlogs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("Z"), at(vlogs[0], 5)+1000); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vlogs[1], at(vlogs[1], 15)+1000); err != nil {
		t.Fatal(err)
	}
	return []string{ids[5], ids[15], ids[25]}, batchID
}

// TestUnreadableHookIsDeadLettered: a hook whose record cannot be read
// from a damaged value log goes to the dead-letter store on its own,
// without a body, and every other hook of its target is claimed, in
// order; whether the damaged hooks were in a batch in flight (which
// keeps its id) or still queued.
func TestUnreadableHookIsDeadLettered(t *testing.T) {
	for _, tc := range []struct{ inFlight, maxUnreadable int }{{0, 256}, {20, 256}, {0, 1}} {
		t.Run(fmt.Sprintf("in-flight=%d/max=%d", tc.inFlight, tc.maxUnreadable), func(t *testing.T) {
			orig := maxUnreadable
			maxUnreadable = tc.maxUnreadable
			t.Cleanup(func() { maxUnreadable = orig })
			inFlight := tc.inFlight
			dir := t.TempDir()
			damaged, batchID := damagedStore(t, dir, inFlight)

			var given []string
			s := openStore(t, dir, Options{GCInterval: -1, OnGivenUp: func(reason string, hooks int) {
				given = append(given, fmt.Sprintf("%s:%d", reason, hooks))
			}})
			st := statusOf(t, s, unreadableURL)
			if st.Pending != 30 {
				t.Fatalf("pending = %d after the restart, want 30", st.Pending)
			}
			var got []string
			for turn := 0; ; turn++ {
				b, err := s.Claim(st.ID, 10, 0)
				if errors.Is(err, ErrNoHooks) {
					break
				}
				if err != nil {
					t.Fatalf("claim %d: %v", turn, err)
				}
				if turn == 0 && batchID != "" && b.ID != batchID {
					t.Errorf("batch in flight came back as %s, want %s", b.ID, batchID)
				}
				if b.Size != len(b.Hooks) {
					t.Errorf("batch %s: Size %d, %d hooks", b.ID, b.Size, len(b.Hooks))
				}
				got = append(got, bodies(b)...)
				if _, err := s.Ack(st.ID, b.ID, NextClaim{}); err != nil {
					t.Fatal(err)
				}
			}
			var want []string
			for n := range 30 {
				if n%10 != 5 {
					want = append(want, bigBody(n))
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("delivered %d hooks: %.60q, want the 27 readable ones in order", len(got), got)
			}
			if stats := s.Stats(); stats.PendingHooks != 0 || stats.PendingBytes != 0 {
				t.Errorf("stats after delivery: %+v, want nothing pending", stats)
			}
			if !slices.Equal(given, []string{"unreadable:1", "unreadable:1", "unreadable:1"}) {
				t.Errorf("OnGivenUp calls: %q, want one per damaged hook", given)
			}

			letters, err := s.ListDeadLetters(DeadLetterFilter{}, true)
			if err != nil {
				t.Fatal(err)
			}
			var hookIDs []string
			for _, d := range letters {
				if d.Reason != ReasonUnreadable || d.Target != unreadableURL || d.TargetID != st.ID || d.Detail == "" || len(d.Hooks) != 1 {
					t.Errorf("dead letter %+v: want reason %q, the target, a detail and one hook", d, ReasonUnreadable)
					continue
				}
				if h := d.Hooks[0]; len(h.Body) != 0 || h.Target != unreadableURL {
					t.Errorf("dead letter %s: hook %+v, want the target and no body", d.ID, h)
				}
				hookIDs = append(hookIDs, d.Hooks[0].ID)
			}
			if !slices.Equal(hookIDs, damaged) {
				t.Errorf("dead letters hold hooks %q, want the damaged ones %q", hookIDs, damaged)
			}
			for _, d := range letters {
				if !strings.Contains(d.Detail, "value log entry of 7") {
					t.Errorf("dead letter %s: detail %q, want the value log entry", d.ID, d.Detail)
				}
			}

			// The dead letters are there after a restart, nothing is pending.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir, Options{GCInterval: -1})
			if stats := s.Stats(); stats.PendingHooks != 0 {
				t.Errorf("pending after a restart: %+v", stats)
			}
			if ds, err := s.ListDeadLetters(DeadLetterFilter{Reason: ReasonUnreadable}, false); err != nil || len(ds) != 3 {
				t.Errorf("unreadable dead letters after a restart: %d, %v; want 3", len(ds), err)
			}
		})
	}
}

// failReads makes readValue fail with err for the hook whose body is
// body, until the test ends.
func failReads(t *testing.T, body string, err error) {
	t.Helper()
	orig := readValue
	t.Cleanup(func() { readValue = orig })
	readValue = func(item *badger.Item, fn func([]byte) error) error {
		return orig(item, func(v []byte) error {
			if bytes.Contains(v, []byte(body)) {
				return err
			}
			return fn(v)
		})
	}
}

// TestTransientReadErrorDeadLettersNothing: an error reading a hook
// that may pass (an I/O error, a closed store) fails the claim, which
// the sender retries; nothing is dead-lettered or dropped.
func TestTransientReadErrorDeadLettersNothing(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		for _, injected := range []error{errors.New("read 000001.vlog: input/output error"), badger.ErrDBClosed} {
			t.Run(fmt.Sprintf("in-flight=%t/%v", inFlight, injected), func(t *testing.T) {
				s := openStore(t, t.TempDir(), Options{})
				for n := range 3 {
					put(t, s, unreadableURL, bigBody(n))
				}
				id := statusOf(t, s, unreadableURL).ID
				var batchID string
				if inFlight {
					b, err := s.Claim(id, 0, 0)
					if err != nil {
						t.Fatal(err)
					}
					batchID = b.ID
				}
				failReads(t, bigBody(1), injected)
				if _, err := s.Claim(id, 0, 0); !errors.Is(err, injected) {
					t.Fatalf("claim: %v, want the injected error", err)
				}
				if ds, err := s.ListDeadLetters(DeadLetterFilter{}, false); err != nil || len(ds) != 0 {
					t.Fatalf("dead letters: %d, %v; want none", len(ds), err)
				}
				if st := statusOf(t, s, unreadableURL); st.Pending != 3 || st.PendingBytes != int64(3*len(bigBody(0))) {
					t.Fatalf("status after the failed claim: %+v, want 3 hooks pending", st)
				}

				readValue = (*badger.Item).Value
				b, err := s.Claim(id, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				if want := []string{bigBody(0), bigBody(1), bigBody(2)}; !slices.Equal(bodies(b), want) || (inFlight && b.ID != batchID) {
					t.Errorf("claim after the error passed: batch %s %q, want %s %q", b.ID, bodies(b), batchID, want)
				}
			})
		}
	}
}

// TestUnreadableOnceIsNotDeadLettered: a hook that reads as lost once
// (as one moved by a value-log GC does to a transaction older than the
// move) but reads back in a new transaction is not dead-lettered: the
// claim fails, and the next one sends it.
func TestUnreadableOnceIsNotDeadLettered(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		t.Run(fmt.Sprintf("in-flight=%t", inFlight), func(t *testing.T) {
			s := openStore(t, t.TempDir(), Options{})
			for n := range 3 {
				put(t, s, unreadableURL, bigBody(n))
			}
			id := statusOf(t, s, unreadableURL).ID
			if inFlight {
				if _, err := s.Claim(id, 0, 0); err != nil {
					t.Fatal(err)
				}
			}
			orig := readValue
			t.Cleanup(func() { readValue = orig })
			var failed atomic.Bool
			readValue = func(item *badger.Item, fn func([]byte) error) error {
				return orig(item, func(v []byte) error {
					if bytes.Contains(v, []byte(bigBody(1))) && failed.CompareAndSwap(false, true) {
						return fmt.Errorf("injected once: %w", errCorrupt)
					}
					return fn(v)
				})
			}
			if _, err := s.Claim(id, 0, 0); !errors.Is(err, errReadBack) {
				t.Fatalf("claim: %v, want errReadBack", err)
			}
			b, err := s.Claim(id, 0, 0)
			if want := []string{bigBody(0), bigBody(1), bigBody(2)}; err != nil || !slices.Equal(bodies(b), want) {
				t.Fatalf("claim after: %v, %v; want all three", b, err)
			}
			if ds, err := s.ListDeadLetters(DeadLetterFilter{}, false); err != nil || len(ds) != 0 {
				t.Errorf("dead letters: %d, %v; want none", len(ds), err)
			}
		})
	}
}

// TestUnreadableRunSpansClaims: a run of unreadable hooks longer than
// one claim dead-letters (maxUnreadable) is dead-lettered by one Claim
// call all the same, which returns the first hook that can be read.
func TestUnreadableRunSpansClaims(t *testing.T) {
	orig := maxUnreadable
	maxUnreadable = 1
	t.Cleanup(func() { maxUnreadable = orig })
	s := openStore(t, t.TempDir(), Options{})
	for n := range 4 {
		put(t, s, unreadableURL, bigBody(n))
	}
	damaged := fmt.Errorf("injected: %w", errCorrupt)
	failReads(t, bigBody(1), damaged)
	failReads(t, bigBody(2), damaged)
	id := statusOf(t, s, unreadableURL).ID
	b, err := s.Claim(id, 1, 0)
	if err != nil || !slices.Equal(bodies(b), []string{bigBody(0)}) {
		t.Fatalf("claim: %v, %v; want hook 0", b, err)
	}
	if _, err := s.Ack(id, b.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	b, err = s.Claim(id, 1, 0)
	if err != nil || !slices.Equal(bodies(b), []string{bigBody(3)}) {
		t.Fatalf("claim: %v, %v; want hook 3", b, err)
	}
	if ds, err := s.ListDeadLetters(DeadLetterFilter{Reason: ReasonUnreadable}, false); err != nil || len(ds) != 2 {
		t.Errorf("unreadable dead letters: %d, %v; want 2", len(ds), err)
	}
	if st := statusOf(t, s, unreadableURL); st.Pending != 1 || st.PendingBytes != int64(len(bigBody(3))) {
		t.Errorf("status %+v, want hook 3 alone pending", st)
	}
}

// TestGiveUpWithUnreadableHook: a batch given up whose hook became
// unreadable after its claim goes to the dead-letter store with the
// hooks that can be read; that hook gets a dead letter of its own.
func TestGiveUpWithUnreadableHook(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	for n := range 3 {
		put(t, s, unreadableURL, bigBody(n))
	}
	id := statusOf(t, s, unreadableURL).ID
	b, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	failReads(t, bigBody(1), fmt.Errorf("injected: %w", errCorrupt))
	if _, err := s.GiveUp(id, b.ID, "status", Failure{At: s.now(), Status: 400}, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	ds, err := s.ListDeadLetters(DeadLetterFilter{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, fmt.Sprintf("%s %d", d.Reason, len(d.Hooks)))
	}
	if want := []string{"status 2", ReasonUnreadable + " 1"}; !slices.Equal(got, want) {
		t.Errorf("dead letters %q, want %q", got, want)
	}
	if st := s.Stats(); st.PendingHooks != 0 || st.PendingBytes != 0 {
		t.Errorf("stats %+v, want nothing pending", st)
	}
}

// TestReplayRefusesUnreadable: a dead letter without bodies is never
// replayed; the others selected with it are, and it can be purged.
func TestReplayRefusesUnreadable(t *testing.T) {
	dir := t.TempDir()
	damagedStore(t, dir, 0)
	s := openStore(t, dir, Options{GCInterval: -1})
	id := statusOf(t, s, unreadableURL).ID
	b, err := s.Claim(id, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GiveUp(id, b.ID, "status", Failure{At: s.now(), Status: 400}, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := s.Claim(id, 0, 0)
		if errors.Is(err, ErrNoHooks) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Ack(id, b.ID, NextClaim{}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil || len(all) != 4 {
		t.Fatalf("dead letters: %d, %v; want 4", len(all), err)
	}

	replayed, hooks, err := s.ReplayDeadLetters(DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(replayed, []string{b.ID}) || hooks != 1 {
		t.Errorf("replayed %q (%d hooks), want only %s (1 hook)", replayed, hooks, b.ID)
	}
	left, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 3 || left[0].Reason != ReasonUnreadable {
		t.Fatalf("left after the replay: %+v, want the 3 unreadable", left)
	}
	if st := statusOf(t, s, unreadableURL); st.Pending != 1 {
		t.Errorf("pending after the replay: %d, want the 1 hook replayed", st.Pending)
	}
	purged, err := s.PurgeDeadLetters(DeadLetterFilter{Reason: ReasonUnreadable})
	if err != nil || len(purged) != 3 {
		t.Errorf("purged %q, %v; want the 3 unreadable", purged, err)
	}
}

// TestUnreadableDeadLetterIsListed: a dead letter whose own record is
// damaged (in the value log, as a large one is) is listed by its id
// with reason unreadable, is not replayed, and does not stop the others
// from being listed, replayed and purged; it can be purged by its id.
func TestUnreadableDeadLetterIsListed(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{GCInterval: -1})
	var letters []string
	for n := range 3 {
		put(t, s, unreadableURL, bigBody(10*n+5)) // each 70 kB: in the value log
		_, id := giveUpBatch(t, s, unreadableURL)
		letters = append(letters, id)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil || len(vlogs) != 1 {
		t.Fatalf("value-log files %v, %v; want one", vlogs, err)
	}
	// Cut short after the first dead letter (the hooks' records come
	// first, then each letter with its body in base64).
	b, err := os.ReadFile(vlogs[0])
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(letters[1]))
	if i < 0 {
		t.Fatalf("dead letter %s not in the value log", letters[1])
	}
	if err := os.Truncate(vlogs[0], int64(i)+1000); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{GCInterval: -1})
	ds, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.ID+" "+d.Reason)
	}
	want := []string{letters[0] + " status", letters[1] + " " + ReasonUnreadable, letters[2] + " " + ReasonUnreadable}
	if !slices.Equal(got, want) {
		t.Fatalf("dead letters %q, want %q", got, want)
	}
	replayed, _, err := s.ReplayDeadLetters(DeadLetterFilter{})
	if err != nil || !slices.Equal(replayed, letters[:1]) {
		t.Errorf("replayed %q, %v; want %q", replayed, err, letters[:1])
	}
	purged, err := s.PurgeDeadLetters(DeadLetterFilter{IDs: letters[1:2]})
	if err != nil || !slices.Equal(purged, letters[1:2]) {
		t.Errorf("purged %q, %v; want %q", purged, err, letters[1:2])
	}
}
