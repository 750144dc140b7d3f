package sender

import (
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"hookproxy/buffer"
)

// errInjected is the failure failingStore injects.
var errInjected = errors.New("injected: sync failed (disk full)")

// failingStore is a real store whose writes after an attempt (Ack,
// RecordAttempt, GiveUp, GiveUpGone) fail once writes runs out, and
// whose Claims fail while claims is above zero.
type failingStore struct {
	*buffer.Store
	writes atomic.Int64 // settling writes left before they fail; -1: never fail
	claims atomic.Int64 // claims left to fail
}

func newFailingStore(st *buffer.Store) *failingStore {
	f := &failingStore{Store: st}
	f.writes.Store(-1)
	return f
}

func (f *failingStore) write() error {
	if f.writes.Load() < 0 {
		return nil
	}
	if f.writes.Add(-1) < 0 {
		f.writes.Store(0)
		return errInjected
	}
	return nil
}

func (f *failingStore) Claim(id buffer.TargetID, maxHooks int, maxBytes int64) (*buffer.Batch, error) {
	if f.claims.Add(-1) >= 0 {
		return nil, errInjected
	}
	return f.Store.Claim(id, maxHooks, maxBytes)
}

func (f *failingStore) RecordAttempt(id buffer.TargetID, batchID string, fl buffer.Failure) error {
	if err := f.write(); err != nil {
		return err
	}
	return f.Store.RecordAttempt(id, batchID, fl)
}

func (f *failingStore) Ack(id buffer.TargetID, batchID string, next buffer.NextClaim) (buffer.TargetStatus, error) {
	if err := f.write(); err != nil {
		return buffer.TargetStatus{}, err
	}
	return f.Store.Ack(id, batchID, next)
}

func (f *failingStore) GiveUp(id buffer.TargetID, batchID, reason string, fl buffer.Failure, next buffer.NextClaim) (buffer.TargetStatus, error) {
	if err := f.write(); err != nil {
		return buffer.TargetStatus{}, err
	}
	return f.Store.GiveUp(id, batchID, reason, fl, next)
}

func (f *failingStore) GiveUpGone(id buffer.TargetID, batchID, reason string, fl buffer.Failure) (buffer.TargetStatus, error) {
	if err := f.write(); err != nil {
		return buffer.TargetStatus{}, err
	}
	return f.Store.GiveUpGone(id, batchID, reason, fl)
}

// TestStoreFailureAfterAttemptSendsNothingAgain: when the store cannot
// record an attempt's outcome (a full disk, say), the target's next turns
// retry the record, not the POST: the receiver has had its answer and
// must not get the batch once more per failed write. Once the store
// recovers, the outcome is the one the receiver gave.
func TestStoreFailureAfterAttemptSendsNothingAgain(t *testing.T) {
	for _, tt := range []struct {
		name    string
		respond func(int, http.ResponseWriter, *http.Request)
		// sends is how many requests the receiver gets in all; pending and
		// dead, what is left in the store at the end.
		sends, pending, dead int
	}{
		{"delivered", nil, 1, 0, 0},
		{"refused", failFirst(1, http.StatusBadRequest), 1, 0, 1},
		// The 503 is recorded late, and its retry comes a retry interval
		// after the record: a second send, which is delivered.
		{"retryable", failFirst(1, http.StatusServiceUnavailable), 2, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock(t0)
			rc := newReceiver(t, tt.respond)
			st := openStore(t, t.TempDir(), clk)
			fs := newFailingStore(st)
			fs.writes.Store(0) // every write after an attempt fails
			h := newHarness(t, clk, st, Options{Store: fs, RetryInterval: 5 * time.Second, Retries: 3}).start()
			h.put(rc.URL, `{"n":1}`, jsonHeader())
			h.settle()
			for range 4 {
				h.advance(5 * time.Second)
			}
			if n := len(rc.got()); n != 1 {
				t.Fatalf("receiver got the batch %d times while the store failed, want once", n)
			}
			fs.writes.Store(-1) // the store recovers
			for range 3 {
				h.advance(5 * time.Second)
			}
			if got := rc.got(); len(got) != tt.sends {
				t.Errorf("receiver got %d requests, want %d", len(got), tt.sends)
			} else if tt.sends > 1 && !sameKey(got[0], got[1]) {
				t.Errorf("the retry is not the same batch: %v, %v", got[0].header, got[1].header)
			}
			if n := pending(t, st); n != tt.pending {
				t.Errorf("%d hooks pending, want %d", n, tt.pending)
			}
			dls := deadLetters(t, st)
			if len(dls) != tt.dead {
				t.Fatalf("%d dead letters, want %d", len(dls), tt.dead)
			}
			if tt.dead > 0 && (dls[0].LastStatus != http.StatusBadRequest || dls[0].Attempts != 1) {
				t.Errorf("dead letter: last status %d, attempts %d; want the receiver's 400 on attempt 1", dls[0].LastStatus, dls[0].Attempts)
			}
		})
	}
}

// TestStoreErrorsShowAsOverdue: a target whose turns keep failing in the
// store makes no attempt; OldestDue (the stall signal of /readyz and
// hookproxy_sender_overdue_seconds) counts from when its batch was first
// due, not from the last failure, and falls back once it is delivered.
func TestStoreErrorsShowAsOverdue(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	fs := newFailingStore(st)
	fs.claims.Store(1000)
	h := newHarness(t, clk, st, Options{Store: fs, RetryInterval: 5 * time.Second}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.settle()
	for range 60 { // five minutes
		h.advance(5 * time.Second)
	}
	if n := len(rc.got()); n != 0 {
		t.Fatalf("%d attempts while every claim failed", n)
	}
	if d := h.snd.OldestDue(clk.Now()); d != 5*time.Minute {
		t.Errorf("OldestDue = %v after five minutes of failed claims, want 5m", d)
	}
	fs.claims.Store(0)
	h.advance(5 * time.Second)
	if n := len(rc.got()); n != 1 {
		t.Fatalf("%d attempts once the store recovered, want 1", n)
	}
	if d := h.snd.OldestDue(clk.Now()); d != 0 {
		t.Errorf("OldestDue = %v once delivered, want 0", d)
	}
}

// TestGoneMarkAndDeadLetterAreOneWrite: the process dies right after the
// first write that follows a 410. The gone mark and the dead letter of
// the batch that got the 410 are one write, so the restart finds both,
// and the gone webhook went out: never a gone target whose batch is
// dead-lettered as "not sent", with the 410 lost and no gone webhook.
func TestGoneMarkAndDeadLetterAreOneWrite(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	app := newReceiver(t, nil)
	dir := t.TempDir()
	st := openStore(t, dir, clk)
	fs := newFailingStore(st)
	fs.writes.Store(1) // the "crash": no write lands after the first
	h := newHarness(t, clk, st, Options{Store: fs, GoneWebhook: app.URL + "/gone"})
	notified := make(chan error, 2)
	h.snd.onGoneNotified = func(err error) { notified <- err }
	h.start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.settle()
	if err := recv(t, notified, "the gone webhook"); err != nil {
		t.Fatalf("gone webhook: %v", err)
	}
	h.stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, dir, clk)
	h = newHarness(t, clk, st, Options{GoneWebhook: app.URL + "/gone"}).start()
	h.settle()
	if n := len(rc.got()); n != 1 {
		t.Errorf("the receiver that answered 410 got %d requests, want 1", n)
	}
	dls := deadLetters(t, st)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	if dls[0].Reason != ReasonGone || dls[0].LastStatus != http.StatusGone || dls[0].Attempts != 1 {
		t.Errorf("dead letter of the batch that got the 410: reason %s, last status %d, attempts %d, detail %q",
			dls[0].Reason, dls[0].LastStatus, dls[0].Attempts, dls[0].Detail)
	}
	if n := len(app.got()); n != 1 {
		t.Errorf("gone webhook sent %d times, want 1", n)
	}
}

// TestReplayOrderAfterClockStepBack: dead letters are replayed in the
// order they were made, also when the wall clock steps back between two
// (an NTP step, a resumed VM): ids sort by the time they carry, which
// never goes back.
func TestReplayOrderAfterClockStepBack(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, failFirst(2, http.StatusBadRequest))
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.settle()
	clk.Advance(-2 * time.Second)
	h.put(rc.URL, `{"n":2}`, jsonHeader())
	h.settle()
	if n := len(deadLetters(t, st)); n != 2 {
		t.Fatalf("%d dead letters, want 2", n)
	}
	if _, _, err := st.ReplayDeadLetters(buffer.DeadLetterFilter{}); err != nil {
		t.Fatal(err)
	}
	h.settle()
	got := rc.got()
	if len(got) != 4 {
		t.Fatalf("%d requests, want 4", len(got))
	}
	if got[2].body != `{"n":1}` || got[3].body != `{"n":2}` {
		t.Errorf("replay delivered %s then %s, want n=1 then n=2, as accepted", got[2].body, got[3].body)
	}
}

// TestClearGoneAfterAFailedGiveUp: a gone target's batch is given up
// without an attempt, and the store fails that write. When the operator
// clears the mark before the next turn, the batch is sent: what was
// decided without the receiver is decided again, not replayed.
func TestClearGoneAfterAFailedGiveUp(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, failFirst(1, http.StatusGone))
	st := openStore(t, t.TempDir(), clk)
	fs := newFailingStore(st)
	h := newHarness(t, clk, st, Options{Store: fs, RetryInterval: 5 * time.Second, Retries: 3}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.settle() // the 410: the target is gone, batch 1 dead-lettered
	if n := len(deadLetters(t, st)); n != 1 {
		t.Fatalf("%d dead letters after the 410, want 1", n)
	}

	fs.writes.Store(0) // the store fails the next writes
	h.put(rc.URL, `{"n":2}`, jsonHeader())
	h.settle() // the give-up of batch 2 ("not sent") fails

	fs.writes.Store(-1) // the store recovers; the operator clears the mark
	sts, err := st.Targets()
	if err != nil || len(sts) != 1 {
		t.Fatalf("Targets = %v, %v", sts, err)
	}
	status, err := st.SetGone(sts[0].ID, false)
	if err != nil {
		t.Fatal(err)
	}
	h.snd.Notify(status)
	h.settle()
	for range 3 {
		h.advance(5 * time.Second)
	}
	if got := rc.got(); len(got) != 2 || got[1].body != `{"n":2}` {
		t.Errorf("receiver got %d requests, want 2: hook 2 is sent once the mark is cleared", len(got))
	}
	if dls := deadLetters(t, st); len(dls) != 1 {
		t.Errorf("%d dead letters, want 1 (the batch that got the 410)", len(dls))
	}
}
