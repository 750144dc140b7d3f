package admin

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"hookproxy/admin/admintest"
	"hookproxy/buffer"
)

func TestEvaluate(t *testing.T) {
	pol := ReadyPolicy{StallAfter: time.Minute, MaxPendingBytes: 1000}
	tests := []struct {
		name   string
		probe  Probe
		policy ReadyPolicy
		want   []string // failing checks, in order
	}{
		{"idle", Probe{}, pol, nil},
		{"overdue below the limit", Probe{Overdue: time.Minute}, pol, nil},
		{"stalled", Probe{Overdue: time.Minute + time.Millisecond}, pol, []string{CheckSender}},
		{"no stall check", Probe{Overdue: time.Hour}, ReadyPolicy{}, nil},
		{"store closed", Probe{StoreErr: buffer.ErrClosed}, pol, []string{CheckStore}},
		{"quota below high water", Probe{PendingBytes: 899}, pol, nil},
		{"quota at high water", Probe{PendingBytes: 900}, pol, []string{CheckQuota}},
		{"custom high water", Probe{PendingBytes: 900}, ReadyPolicy{MaxPendingBytes: 1000, QuotaHighWater: 0.95}, nil},
		{"no quota", Probe{PendingBytes: 1 << 40}, ReadyPolicy{}, nil},
		{"draining", Probe{Draining: true}, pol, []string{CheckDraining}},
		{"everything", Probe{StoreErr: errors.New("disk full"), Draining: true, Overdue: time.Hour, PendingBytes: 1000}, pol,
			[]string{CheckStore, CheckSender, CheckQuota, CheckDraining}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Evaluate(tt.probe, tt.policy)
			var checks []string
			for _, r := range got.Reasons {
				checks = append(checks, r.Check)
				if r.Message == "" {
					t.Errorf("reason %s has no message", r.Check)
				}
			}
			if !slices.Equal(checks, tt.want) || got.Ready != (len(tt.want) == 0) {
				t.Errorf("Evaluate = %+v, want failing checks %v", got, tt.want)
			}
		})
	}
}

// TestReadyz: /readyz follows the sender's progress, the quota, draining
// and the store, as of the server's clock.
func TestReadyz(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	prog := &progress{}
	srv, url := serve(t, Options{Store: st, Progress: prog, StallAfter: time.Minute, MaxPendingBytes: 100, Now: clk.Now})
	check := func(want int, wantChecks ...string) {
		t.Helper()
		var rd Readiness
		if got := admintest.Call(t, "GET", url+"/readyz", "", nil, &rd); got != want {
			t.Fatalf("/readyz = %d %+v, want %d", got, rd, want)
		}
		var checks []string
		for _, r := range rd.Reasons {
			checks = append(checks, r.Check)
		}
		if !slices.Equal(checks, wantChecks) {
			t.Fatalf("/readyz reasons %+v, want checks %v", rd.Reasons, wantChecks)
		}
	}
	check(http.StatusOK)

	prog.set(2 * time.Minute)
	check(http.StatusServiceUnavailable, CheckSender)
	if prog.asked != clk.Now() {
		t.Errorf("OldestDue asked as of %v, want the server's clock %v", prog.asked, clk.Now())
	}
	prog.set(0)
	check(http.StatusOK)

	put(t, st, "http://a.test/hook", string(make([]byte, 95)))
	check(http.StatusServiceUnavailable, CheckQuota)
	kill(t, st, clk, "http://a.test/hook", 0, "status", 400)
	check(http.StatusOK)

	srv.SetDraining(true)
	check(http.StatusServiceUnavailable, CheckDraining)
	srv.SetDraining(false)

	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	check(http.StatusServiceUnavailable, CheckStore)
}

// TestReasonsAlwaysListed: the README gives /readyz as {"ready": ...,
// "reasons": [...]} and lists reasons among /api/status's fields. When
// ready, the list is empty, not missing: a probe script's
// jq '.reasons[]' fails on a missing key ("cannot iterate over null").
func TestReasonsAlwaysListed(t *testing.T) {
	st := openStore(t, newClock())
	_, url := serve(t, Options{Store: st})
	for _, path := range []string{"/readyz", "/api/status"} {
		var got map[string]any
		if code := admintest.Call(t, "GET", url+path, "", nil, &got); code != http.StatusOK {
			t.Fatalf("%s: %d", path, code)
		}
		if r, ok := got["reasons"].([]any); !ok || len(r) != 0 {
			t.Errorf("%s of a ready hookproxy: reasons = %#v, want []", path, got["reasons"])
		}
	}
}
