package buffer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// A target URL and header values may hold bytes that are not UTF-8: Go's
// server takes a raw byte in a request's query, and python's http.client
// sends a str header value as Latin-1 (obs-text, legal in HTTP).
const (
	rawURL    = "http://a.test/hook?who=Jos\xe9"
	rawHeader = "Jos\xe9"
)

func rawHook() *Hook {
	return &Hook{Target: rawURL, Method: "POST", Body: []byte(`{}`), Header: http.Header{"X-Author": {rawHeader}}}
}

// TestRestartKeepsTargetURLBytes: after a restart, a target's batches still
// go to the exact URL the app posted to, and a new hook for that URL joins
// the same FIFO instead of starting a second one.
func TestRestartKeepsTargetURLBytes(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), rawHook()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	ts, err := s.Targets()
	if err != nil || len(ts) != 1 {
		t.Fatalf("targets = %+v, %v", ts, err)
	}
	b, err := s.Claim(ts[0].ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.Target != rawURL {
		t.Errorf("batch after restart goes to %q, want %q", b.Target, rawURL)
	}
	if err := s.Put(context.Background(), rawHook()); err != nil {
		t.Fatal(err)
	}
	if ts, _ := s.Targets(); len(ts) != 1 {
		t.Errorf("a hook for the same URL after a restart made %d targets, want 1", len(ts))
	}
}

// TestReplayKeepsHookBytes: a dead letter replayed puts back the hooks as
// they were captured: same target URL (and so the URL's target), same
// header values.
func TestReplayKeepsHookBytes(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	id, _ := rawDeadLetter(t, s, 1)
	if _, n, err := s.ReplayDeadLetters(DeadLetterFilter{}); err != nil || n != 1 {
		t.Fatalf("replay = %d, %v", n, err)
	}
	ts, err := s.Targets()
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].URL != rawURL {
		t.Fatalf("after replay: targets %+v, want the hook back in one target of %q (the dead letter's was %d)", ts, rawURL, id)
	}
	again, err := s.Claim(ts[0].ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := again.Hooks[0]
	if h.Target != rawURL || h.Header.Get("X-Author") != rawHeader {
		t.Errorf("replayed hook: target %q, X-Author %q; want %q, %q", h.Target, h.Header.Get("X-Author"), rawURL, rawHeader)
	}
}

// TestHookAndBatchIDsDiffer: a hook id never names a batch (or the dead
// letter it becomes): the first hook of a store and the batch claimed for
// it in the same millisecond had the same id, as hooks and batches count
// with sequences of their own that both start at 0.
func TestHookAndBatchIDsDiffer(t *testing.T) {
	at := time.Unix(1700000000, 0)
	s := openStore(t, t.TempDir(), Options{Now: func() time.Time { return at }})
	const url = "http://a.test/"
	h := put(t, s, url, `{}`)
	b, err := s.Claim(statusOf(t, s, url).ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID == h.ID {
		t.Fatalf("batch %s has the id of its hook %s", b.ID, h.ID)
	}
}

// TestReadsDeadLettersStoredAsJSON: dead letters stored before their hooks
// were kept as hook records still list and replay.
func TestReadsDeadLettersStoredAsJSON(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const url = "http://a.test/"
	put(t, s, url, `{"n":0}`)
	old := DeadLetter{ID: "01HF7YAT00FWE8GBR000000001", TargetID: statusOf(t, s, url).ID, Target: url, Reason: "status",
		Hooks: []Hook{{ID: "01HF7YAT00FWE8GBR000000002", Target: url, Method: "POST", Body: []byte(`{"n":-1}`), Received: time.Unix(1700000000, 0)}}}
	v, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(deadKey(old.ID), v) }); err != nil {
		t.Fatal(err)
	}
	if _, n, err := s.ReplayDeadLetters(DeadLetterFilter{Target: url}); err != nil || n != 1 {
		t.Fatalf("replay = %d, %v", n, err)
	}
	b, err := s.Claim(statusOf(t, s, url).ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := bodies(b); len(got) != 2 || got[1] != `{"n":-1}` || b.Hooks[1].ID != old.Hooks[0].ID {
		t.Fatalf("after replay: %v", got)
	}
}

// rawDeadLetter puts n hooks of rawHook for rawURL and gives them up in one
// batch; it returns the target's id and the dead letter's id.
func rawDeadLetter(t *testing.T, s *Store, n int) (TargetID, string) {
	t.Helper()
	for range n {
		if err := s.Put(context.Background(), rawHook()); err != nil {
			t.Fatal(err)
		}
	}
	return giveUpBatch(t, s, rawURL)
}

// TestDeadLetterKeepsTargetURLBytes: a dead letter lists with the exact
// target URL it was captured for (the admin API shows it, and selects by
// it): a replay or purge by that URL finds it.
func TestDeadLetterKeepsTargetURLBytes(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	_, dl := rawDeadLetter(t, s, 1)
	d, err := s.GetDeadLetter(dl)
	if err != nil {
		t.Fatal(err)
	}
	if d.Target != rawURL {
		t.Errorf("dead letter's target %q, want %q", d.Target, rawURL)
	}
	if _, n, err := s.ReplayDeadLetters(DeadLetterFilter{Target: rawURL}); err != nil || n != 1 {
		t.Errorf("replay by the target URL = %d, %v; want the dead letter's hook", n, err)
	}
}

// TestPartReplayKeepsHookBytes: a replay that stops part way (here at the
// quota) leaves the hooks it did not put back in the dead letter as they
// were captured, for the next replay.
func TestPartReplayKeepsHookBytes(t *testing.T) {
	const n = replayChunk + 10
	size := int64(len(rawHook().Body))
	s := openStore(t, t.TempDir(), Options{MaxPendingBytes: n * size})
	_, dl := rawDeadLetter(t, s, n)
	// Leave room for the first chunk of the replay only.
	put(t, s, "http://other.test/", strings.Repeat("x", int(n*size-replayChunk*size)))
	if _, got, err := s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{dl}}); !errors.Is(err, ErrQuota) || got != replayChunk {
		t.Fatalf("replay = %d, %v; want the first %d hooks, then ErrQuota", got, err, replayChunk)
	}
	d, err := s.GetDeadLetter(dl)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Hooks) != n-replayChunk || d.Target != rawURL {
		t.Fatalf("dead letter after the part replay: %d hooks, target %q; want %d, %q", len(d.Hooks), d.Target, n-replayChunk, rawURL)
	}
	for i, h := range d.Hooks {
		if h.Target != rawURL || h.Header.Get("X-Author") != rawHeader {
			t.Fatalf("hook %d left in the dead letter: target %q, X-Author %q; want %q, %q", i, h.Target, h.Header.Get("X-Author"), rawURL, rawHeader)
		}
	}
}
