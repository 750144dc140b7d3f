package buffer

import (
	"sync"
	"testing"
	"time"
)

// stepClock is a wall clock that a test sets, steps included.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

var clockT0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// A wall clock stepped back while hookproxy was stopped (NTP correcting
// a clock that ran ahead, say) must not leave the stored times ahead of
// now: the sender would wait out the step before a batch window ends or
// a retry is due, and ages would read as zero meanwhile.
func TestStoredTimesAfterClockStepsBack(t *testing.T) {
	dir := t.TempDir()
	clk := &stepClock{now: clockT0}
	s := openStore(t, dir, Options{Now: clk.Now, GCInterval: -1})
	const a, b = "http://a.test/", "http://b.test/"
	put(t, s, a, `{"n":1}`)
	put(t, s, b, `{"n":2}`)
	id := statusOf(t, s, a).ID
	batch, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := clockT0.Add(time.Second)
	if err := s.RecordAttempt(id, batch.ID, Failure{At: at, Status: 503, Error: "HTTP 503", Next: at.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	now := clockT0.Add(-time.Hour)
	clk.set(now)
	s = openStore(t, dir, Options{Now: clk.Now, GCInterval: -1})
	if got := statusOf(t, s, b).Oldest; !got.Equal(now) {
		t.Errorf("oldest arrival after the step back = %v, want now (%v)", got, now)
	}
	f := statusOf(t, s, a).InFlight
	if f == nil {
		t.Fatal("no batch in flight after restart")
	}
	if want := now.Add(5 * time.Second); !f.NextAttempt.Equal(want) {
		t.Errorf("next attempt after the step back = %v, want the recorded wait from now (%v)", f.NextAttempt, want)
	}
	for name, v := range map[string]time.Time{"created": f.Created, "first attempt": f.FirstAttempt, "last attempt": f.LastAttempt} {
		if v.After(now) {
			t.Errorf("%s %v is after now (%v)", name, v, now)
		}
	}
	if st := s.Stats(); !st.Oldest.Equal(now) {
		t.Errorf("Stats().Oldest = %v, want %v", st.Oldest, now)
	}
}

// A stored time that is not ahead of now keeps its value after a
// restart: a step forward cannot be told from time that passed.
func TestStoredTimesKeptWithoutStep(t *testing.T) {
	dir := t.TempDir()
	clk := &stepClock{now: clockT0}
	s := openStore(t, dir, Options{Now: clk.Now, GCInterval: -1})
	put(t, s, "http://a.test/", `{"n":1}`)
	id := statusOf(t, s, "http://a.test/").ID
	batch, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	next := clockT0.Add(time.Minute)
	if err := s.RecordAttempt(id, batch.ID, Failure{At: clockT0, Status: 503, Next: next}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clk.set(clockT0.Add(10 * time.Second))
	s = openStore(t, dir, Options{Now: clk.Now, GCInterval: -1})
	st := statusOf(t, s, "http://a.test/")
	if !st.Oldest.Equal(clockT0) || !st.InFlight.Created.Equal(clockT0) || !st.InFlight.NextAttempt.Equal(next) {
		t.Errorf("after restart: oldest %v, created %v, next attempt %v; want %v, %v, %v",
			st.Oldest, st.InFlight.Created, st.InFlight.NextAttempt, clockT0, clockT0, next)
	}
}

// The arrival of a target's new head, read from its queue key after an
// acknowledgement, is on the process's monotonic clock like a fresh
// capture's, so that a later step of the wall clock does not move the
// head's batch window: without it, a busy target with BATCH_TIME set
// waited out a step back of an hour before its next batch.
func TestHeadArrivalOnMonotonicClock(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{GCInterval: -1}) // the real clock
	id, b := firstOfTwo(t, s, "http://a.test/")
	st, err := s.Ack(id, b.ID, NextClaim{})
	if err != nil {
		t.Fatal(err)
	}
	// Round(0) strips a monotonic reading: a time equal to its rounding
	// has none, and compares with now by the wall clock alone.
	if st.Oldest.IsZero() || st.Oldest == st.Oldest.Round(0) {
		t.Errorf("head arrival %v after an ack has no monotonic reading", st.Oldest)
	}
}

// Ids sort in the order they were made across a restart on a clock that
// stepped back meanwhile, so dead letters are listed, and replayed, in
// the order their batches were given up.
func TestIDsSortAcrossRestartAfterStepBack(t *testing.T) {
	dir := t.TempDir()
	clk := &stepClock{now: clockT0}
	const url = "http://a.test/"
	giveUp := func(s *Store) {
		t.Helper()
		id := statusOf(t, s, url).ID
		b, err := s.Claim(id, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GiveUp(id, b.ID, "retries-exhausted", Failure{At: clk.Now(), Status: 503}, NextClaim{}); err != nil {
			t.Fatal(err)
		}
	}
	s := openStore(t, dir, Options{Now: clk.Now, GCInterval: -1})
	first := put(t, s, url, `{"n":1}`).ID
	giveUp(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	clk.set(clockT0.Add(-time.Hour))
	s = openStore(t, dir, Options{Now: clk.Now, GCInterval: -1})
	second := put(t, s, url, `{"n":2}`).ID
	if second <= first {
		t.Errorf("hook id %s made after the restart sorts before %s", second, first)
	}
	giveUp(s)
	dls, err := s.ListDeadLetters(DeadLetterFilter{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 || string(dls[0].Hooks[0].Body) != `{"n":1}` {
		t.Fatalf("dead letters %+v, want the first given up first", dls)
	}
	if _, _, err := s.ReplayDeadLetters(DeadLetterFilter{Target: url}); err != nil {
		t.Fatal(err)
	}
	b, err := s.Claim(statusOf(t, s, url).ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := bodies(b); len(got) != 2 || got[0] != `{"n":1}` || got[1] != `{"n":2}` {
		t.Errorf("replayed hooks in order %v, want {\"n\":1} then {\"n\":2}", got)
	}
}

func TestIDTimeMillis(t *testing.T) {
	for _, ms := range []int64{0, 1, 1893553445000, 1<<48 - 1} {
		id := newID(time.UnixMilli(ms), 0xdeadbeef, 42|batchSeqBit)
		if got, ok := idTimeMillis(id); !ok || got != ms {
			t.Errorf("idTimeMillis(%s) = %d, %v; want %d", id, got, ok, ms)
		}
	}
	for _, bad := range []string{"", "01", "0000000!000000000000000000", "U1M8EB0CAGXVK2M8000000001C"} {
		if _, ok := idTimeMillis(bad); ok {
			t.Errorf("idTimeMillis(%q) ok, want false", bad)
		}
	}
}
