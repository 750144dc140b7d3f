package buffer

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// TestDeadLetterPage: a page gives what a whole listing gives from its
// offset on, and the same total, whatever the filter: dead letters in
// parts, one part way replayed, one stored with its hooks as JSON, one
// whose target URL is not UTF-8.
func TestDeadLetterPage(t *testing.T) {
	orig := maxDeadLetterValue
	maxDeadLetterValue = 64 << 10
	t.Cleanup(func() { maxDeadLetterValue = orig })
	s := openStore(t, t.TempDir(), Options{GCInterval: -1})

	deadLetterOf(t, s, "http://a.test/", 3, 0)
	deadLetterOf(t, s, "http://b.test/", 40, 2<<10) // in parts
	deadLetterOf(t, s, "http://a.test/", 2*replayChunk+3, 0)
	rawDeadLetter(t, s, 2)
	// Part way replayed: a commit fails after the first chunk.
	var commits int
	restore := wrapCommits(t, func(txn *badger.Txn, commit func(*badger.Txn) error) error {
		if commits++; commits == 3 { // the second chunk of the large one
			return fmt.Errorf("injected")
		}
		return commit(txn)
	})
	if _, _, err := s.ReplayDeadLetters(DeadLetterFilter{Target: "http://a.test/"}); err == nil {
		t.Fatal("replay: no error, want the injected one")
	}
	restore()
	// Stored with its hooks as JSON, by an earlier version.
	put(t, s, "http://c.test/", `{"n":0}`)
	old := DeadLetter{ID: "01HF7YAT00FWE8GBR000000001", TargetID: statusOf(t, s, "http://c.test/").ID, Target: "http://c.test/", Reason: "gone",
		Hooks: []Hook{{ID: "01HF7YAT00FWE8GBR000000002", Target: "http://c.test/", Method: "POST", Body: []byte(`{"n":-1}`), Received: time.Unix(1700000000, 0)}}}
	v, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(deadKey(old.ID), v) }); err != nil {
		t.Fatal(err)
	}

	all, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(all, func(d DeadLetter) bool { return strings.HasSuffix(d.ID, "-0002") }) {
		t.Fatal("no dead letter in parts")
	}
	if !slices.ContainsFunc(all, func(d DeadLetter) bool { return d.replayed > 0 }) {
		t.Fatal("no dead letter part way replayed")
	}
	filters := []DeadLetterFilter{{}, {Target: "http://a.test/"}, {Target: rawURL}, {Target: "http://c.test/"},
		{Reason: "gone"}, {Reason: "status", Target: "http://b.test/"}, {TargetID: all[1].TargetID},
		{IDs: []string{all[2].ID, old.ID, "nothing"}}}
	for _, f := range filters {
		want, err := s.ListDeadLetters(f, true)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			for j := range want[i].Hooks {
				want[i].Hooks[j].Body = nil
			}
		}
		if len(want) == 0 {
			t.Fatalf("filter %+v selects nothing", f)
		}
		for _, pg := range [][2]int{{0, 1}, {0, 100}, {1, 2}, {len(want) - 1, 5}, {len(want), 5}} {
			page, total, err := s.DeadLetterPage(f, pg[0], pg[1])
			if err != nil {
				t.Fatal(err)
			}
			end := min(pg[0]+pg[1], len(want))
			if total != len(want) || !slices.EqualFunc(page, want[pg[0]:end], sameDeadLetter) {
				t.Errorf("filter %+v, offset %d, limit %d: %d of %d, want %d of %d", f, pg[0], pg[1], len(page), total, end-pg[0], len(want))
			}
		}
	}
}

func sameDeadLetter(a, b DeadLetter) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb) && a.Size == b.Size && a.Bytes == b.Bytes && a.replayed == b.replayed
}

// withBadRecord encodes dl, a dead letter of one hook, with a second
// record that is not even base64 after the first.
func withBadRecord(t *testing.T, dl DeadLetter) []byte {
	t.Helper()
	v, err := encodeDeadLetter(dl)
	if err != nil {
		t.Fatal(err)
	}
	first := base64.StdEncoding.EncodeToString(encodeHook(&dl.Hooks[0]))
	return []byte(strings.Replace(string(v), `"`+first+`"`, `"`+first+`","!not base64!"`, 1))
}

// TestDeadLetterHeadSkipsHooks: the fields of a dead letter are read
// without decoding its hooks past the first, whose exact target it
// takes: records past the first that are not even base64 do not stop it,
// where a whole decode fails.
func TestDeadLetterHeadSkipsHooks(t *testing.T) {
	const url = "http://a.test/\xff"
	dl := DeadLetter{ID: "01HF7YAT00FWE8GBR000000001", TargetID: 7, Target: url, Reason: "status", Attempts: 3,
		Hooks: []Hook{{ID: "01HF7YAT00FWE8GBR000000002", Target: url, Method: "POST", Body: []byte(`{}`)}}}
	v := withBadRecord(t, dl)
	var whole DeadLetter
	if err := decodeDeadLetter(v, &whole); err == nil {
		t.Fatal("whole decode of a bad record: no error")
	}
	var d DeadLetter
	if err := decodeDeadLetterHead(v, &d); err != nil {
		t.Fatal(err)
	}
	if d.ID != dl.ID || d.TargetID != 7 || d.Target != url || d.Reason != "status" || d.Attempts != 3 || d.Hooks != nil {
		t.Fatalf("head = %+v", d)
	}
}

// TestReplaySkipsALetterWithABadRecord: a dead letter whose fields read
// but whose hooks do not (a record past the first damaged) is not
// replayed, nor said to be: it stays, listed as unreadable.
func TestReplaySkipsALetterWithABadRecord(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	_, good := deadLetterOf(t, s, "http://a.test/", 2, 0)
	const url = "http://b.test/"
	put(t, s, url, `{"n":0}`)
	dl := DeadLetter{ID: "01HF7YAT00FWE8GBR000000001", TargetID: statusOf(t, s, url).ID, Target: url, Reason: "status",
		Hooks: []Hook{{ID: "01HF7YAT00FWE8GBR000000002", Target: url, Method: "POST", Body: []byte(`{}`)}}}
	v := withBadRecord(t, dl)
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(deadKey(dl.ID), v) }); err != nil {
		t.Fatal(err)
	}
	replayed, n, err := s.ReplayDeadLetters(DeadLetterFilter{})
	if err != nil || n != 2 || !slices.Equal(replayed, []string{good}) {
		t.Fatalf("replay = %v, %d hooks, %v; want %s alone, 2 hooks", replayed, n, err, good)
	}
	left, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil || len(left) != 1 || left[0].ID != dl.ID || left[0].Reason != ReasonUnreadable {
		t.Fatalf("left = %+v, %v; want the bad one, unreadable", left, err)
	}
}
