package sender

import (
	"net/http"
	"testing"
	"time"
)

// A wall clock stepped back an hour while hookproxy was stopped (a clock
// that ran ahead, corrected by NTP; a container started with a wrong
// clock) delays neither a batch window nor a retry by the step: both
// count their wait from the restart at most.
func TestRestartAfterClockStepBack(t *testing.T) {
	const step = time.Hour
	t.Run("batch window", func(t *testing.T) {
		clk := newFakeClock(t0)
		rc := newReceiver(t, nil)
		dir := t.TempDir()
		st := openStore(t, dir, clk)
		putHook(t, st, rc.URL, `{"n":1}`, jsonHeader())
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}

		clk = newFakeClock(t0.Add(-step))
		st = openStore(t, dir, clk)
		h := newHarness(t, clk, st, Options{BatchTime: 10 * time.Second}).start()
		if state := h.settle(); state.next.After(clk.Now().Add(10 * time.Second)) {
			t.Errorf("after the step back the window ends at %v, want by %v", state.next, clk.Now().Add(10*time.Second))
		}
		h.advance(10 * time.Second)
		if got := rc.got(); len(got) != 1 || got[0].body != `[{"n":1}]` {
			t.Fatalf("got %d POSTs a window after the restart, want 1", len(got))
		}
	})

	t.Run("retry", func(t *testing.T) {
		clk := newFakeClock(t0)
		rc := newReceiver(t, failFirst(1, http.StatusServiceUnavailable))
		dir := t.TempDir()
		opts := Options{Retries: 3, RetryInterval: 5 * time.Second, Backoff: BackoffFixed}
		attemptThenStop(t, clk, dir, opts, rc.URL)

		clk = newFakeClock(t0.Add(-step))
		st := openStore(t, dir, clk)
		h := newHarness(t, clk, st, opts).start()
		if state := h.settle(); state.next.After(clk.Now().Add(5 * time.Second)) {
			t.Errorf("after the step back the retry is due at %v, want by %v", state.next, clk.Now().Add(5*time.Second))
		}
		h.advance(5 * time.Second)
		got := rc.got()
		if len(got) != 2 || !sameKey(got[1], got[0]) {
			t.Fatalf("got %d attempts a retry interval after the restart; want 2 with the same Idempotency-Key", len(got))
		}
		if n := pending(t, st); n != 0 {
			t.Errorf("%d hooks pending after the retry was delivered, want 0", n)
		}
	})
}
