package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hookproxy/admin/admintest"
	"hookproxy/buffer"
)

// TestTokenGuardsEveryRouteButHealthz: with a token set, every route but
// /healthz (unknown ones too) refuses a request without it, with a wrong
// one or with another scheme, and accepts the right one.
func TestTokenGuardsEveryRouteButHealthz(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	put(t, st, "http://a.test/hook", `{"n":1}`)
	id := strconv.FormatUint(uint64(targetOf(t, st, "http://a.test/hook")), 10)
	dead := kill(t, st, clk, "http://a.test/hook", 0, "status", 400)
	const token = "s3cret-token"
	_, url := serve(t, Options{Store: st, Metrics: NewMetrics("test"), Token: token, CACert: []byte("-----BEGIN CERTIFICATE-----\n")})

	routes := []struct{ method, path string }{
		{"GET", "/readyz"},
		{"GET", "/metrics"},
		{"GET", "/ca.pem"},
		{"GET", "/api/status"},
		{"GET", "/api/targets"},
		{"GET", "/api/targets/" + id},
		{"POST", "/api/targets/" + id + "/clear-gone"},
		{"GET", "/api/dead-letters"},
		{"GET", "/api/dead-letters/" + dead},
		{"POST", "/api/dead-letters/replay?id=" + dead},
		{"DELETE", "/api/dead-letters?id=" + dead},
		{"GET", "/no/such/route"},
	}
	for _, rt := range routes {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token} {
			req, _ := http.NewRequest(rt.method, url+rt.path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with Authorization %q: %d, want 401 with a challenge", rt.method, rt.path, auth, resp.StatusCode)
			}
		}
	}
	// The right token opens every route (the purge runs last, after the
	// replay found the dead letter gone: 404 is an answer past the guard).
	for _, rt := range routes {
		if code := admintest.Call(t, rt.method, url+rt.path, token, nil, nil); code == http.StatusUnauthorized {
			t.Errorf("%s %s with the token: 401", rt.method, rt.path)
		}
	}
	if code := admintest.Call(t, "GET", url+"/healthz", "", nil, nil); code != http.StatusOK {
		t.Errorf("/healthz without token: %d, want 200", code)
	}
}

// TestTokenFromAFile: a token that ends with a newline, as one read from a
// file does, is the token without it; a token of white space only is
// refused.
func TestTokenFromAFile(t *testing.T) {
	st := openStore(t, newClock())
	_, url := serve(t, Options{Store: st, Token: "s3cret\n"})
	if code := admintest.Call(t, "GET", url+"/api/status", "s3cret", nil, nil); code != http.StatusOK {
		t.Errorf("token s3cret for HOOKPROXY_ADMIN_TOKEN \"s3cret\\n\": %d, want 200", code)
	}
	if code := admintest.Call(t, "GET", url+"/api/status", "s3cre", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("a wrong token: %d, want 401", code)
	}
	if _, err := New(Options{Store: st, Token: " \n"}); err == nil {
		t.Error("New took a token of white space only")
	}
}

// TestCredentialHeaders: which header values the dead-letter API hides.
func TestCredentialHeaders(t *testing.T) {
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Api-Key", "X-Auth-Token",
		"X-Access-Token", "X-Client-Secret", "X-Session-Id", "X-Hub-Signature-256", "X-Password", "X-Credentials",
		"X-Shopify-Hmac-Sha256", "X-Hook-Sign", "X-Jwt-Assertion"} {
		if !credentialHeader(k) {
			t.Errorf("%s is shown", k)
		}
	}
	for _, k := range []string{"Content-Type", "User-Agent", "Idempotency-Key", "Accept", "X-Request-Id"} {
		if credentialHeader(k) {
			t.Errorf("%s is hidden", k)
		}
	}
}

// bodyWatch is a store that records the hook bodies a listing reads.
type bodyWatch struct {
	*buffer.Store
	bodies int // bytes of bodies handed to the server
}

func (b *bodyWatch) DeadLetterPage(f buffer.DeadLetterFilter, offset, limit int) ([]buffer.DeadLetter, int, error) {
	ds, total, err := b.Store.DeadLetterPage(f, offset, limit)
	for i := range ds {
		for _, h := range ds[i].Hooks {
			b.bodies += len(h.Body)
		}
	}
	return ds, total, err
}

// TestDeadLetterListingReadsNoBodies: listing dead letters (a page of
// one, here) never holds their hook bodies, which may add up to more than
// the process's memory.
func TestDeadLetterListingReadsNoBodies(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	var ids []string
	for range 3 {
		put(t, st, "http://a.test/hook", `{"pad":"`+strings.Repeat("a", 64<<10)+`"}`)
		ids = append(ids, kill(t, st, clk, "http://a.test/hook", 1, "status", 400))
	}
	watch := &bodyWatch{Store: st}
	_, url := serve(t, Options{Store: watch})
	var dl DeadLetterList
	if code := admintest.Call(t, "GET", url+"/api/dead-letters?limit=1&offset=1", "", nil, &dl); code != http.StatusOK {
		t.Fatalf("list: %d", code)
	}
	if len(dl.DeadLetters) != 1 || dl.DeadLetters[0].ID != ids[1] || dl.Total != 3 || len(dl.DeadLetters[0].HookIDs) != 1 {
		t.Fatalf("list = %+v, want the second of 3 with its hook id", dl)
	}
	if watch.bodies != 0 {
		t.Errorf("the listing read %d bytes of hook bodies", watch.bodies)
	}
}

// racing is a store where, between the API's selection and the replay
// or the purge, somebody else does the other to dead letter id.
type racing struct {
	*buffer.Store
	id string
}

func (p racing) ReplayDeadLetters(f buffer.DeadLetterFilter) ([]string, int, error) {
	if _, err := p.Store.PurgeDeadLetters(buffer.DeadLetterFilter{IDs: []string{p.id}}); err != nil {
		return nil, 0, err
	}
	return p.Store.ReplayDeadLetters(f)
}

func (p racing) PurgeDeadLetters(f buffer.DeadLetterFilter) ([]string, error) {
	if _, _, err := p.Store.ReplayDeadLetters(buffer.DeadLetterFilter{IDs: []string{p.id}}); err != nil {
		return nil, err
	}
	return p.Store.PurgeDeadLetters(f)
}

// TestChangesCountWhatTheyDid: the answer of a replay or a purge lists
// the dead letters it replayed or purged, not those it selected; one
// taken by the other meanwhile is reported not found, and when that was
// every id asked for, the answer is 404, as for ids that never existed.
func TestChangesCountWhatTheyDid(t *testing.T) {
	for _, op := range []string{"replay", "purge"} {
		t.Run(op, func(t *testing.T) {
			clk := newClock()
			st := openStore(t, clk)
			put(t, st, "http://a.test/hook", `{"n":1}`)
			first := kill(t, st, clk, "http://a.test/hook", 1, "status", 400)
			put(t, st, "http://a.test/hook", `{"n":2}`)
			second := kill(t, st, clk, "http://a.test/hook", 1, "status", 400)
			_, url := serve(t, Options{Store: racing{Store: st, id: first}})
			change := func(ids ...string) (code int, n int, done, notFound []string) {
				if op == "replay" {
					var res ReplayResult
					code = admintest.Call(t, "POST", url+"/api/dead-letters/replay", "", Selector{IDs: ids}, &res)
					return code, res.DeadLetters, res.IDs, res.NotFound
				}
				var res PurgeResult
				code = admintest.Call(t, "DELETE", url+"/api/dead-letters?id="+strings.Join(ids, "&id="), "", nil, &res)
				return code, res.DeadLetters, res.IDs, res.NotFound
			}
			code, n, done, notFound := change(first, second)
			if code != 200 || n != 1 || !slices.Equal(done, []string{second}) || !slices.Equal(notFound, []string{first}) {
				t.Errorf("%s = %d: %d %v, not found %v; want %s done and %s not found", op, code, n, done, notFound, second, first)
			}
			put(t, st, "http://a.test/hook", `{"n":3}`)
			third := kill(t, st, clk, "http://a.test/hook", 0, "status", 400)
			_, url = serve(t, Options{Store: racing{Store: st, id: third}})
			if code, _, _, _ := change(third); code != http.StatusNotFound {
				t.Errorf("%s of an id taken meanwhile: %d, want 404", op, code)
			}
		})
	}
}

// TestReplayPastTheQuota: a replay that would take the pending bytes past
// MAX_PENDING_BYTES, or the disk into its reserve, answers 507, as a
// capture past the quota does, and the dead letter stays.
func TestReplayPastTheQuota(t *testing.T) {
	var free atomic.Int64
	for _, tt := range []struct {
		name, says string
		opts       buffer.Options
	}{
		{"pending bytes", "quota", buffer.Options{MaxPendingBytes: 10}},
		{"disk", "disk nearly full", buffer.Options{MinFreeBytes: 1 << 20, FreeBytes: func(string) (int64, error) { return free.Load(), nil }}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			free.Store(1 << 30)
			clk := newClock()
			tt.opts.Now = clk.Now
			st := openStoreWith(t, tt.opts)
			put(t, st, "http://a.test/hook", `{"n":1}`)
			dead := kill(t, st, clk, "http://a.test/hook", 1, "status", 400)
			put(t, st, "http://a.test/hook", `{"n":2}`) // 7 of the 10 bytes
			free.Store(1 << 19)
			_, url := serve(t, Options{Store: st})
			var e struct {
				Message string `json:"message"`
			}
			code := admintest.Call(t, "POST", url+"/api/dead-letters/replay", "", Selector{IDs: []string{dead}}, &e)
			if code != http.StatusInsufficientStorage || !strings.Contains(e.Message, tt.says) {
				t.Fatalf("refused replay: %d %q, want 507 saying %q", code, e.Message, tt.says)
			}
			if _, err := st.GetDeadLetter(dead); err != nil {
				t.Fatalf("the dead letter is gone after a refused replay: %v", err)
			}
		})
	}
}

// TestReplayPastTheQuotaPartWay: a replay refused by MAX_PENDING_BYTES
// after the first chunk of a dead letter went back says how many hooks
// went back (they are delivered), not only that no dead letter was done.
func TestReplayPastTheQuotaPartWay(t *testing.T) {
	clk := newClock()
	st := openStoreWith(t, buffer.Options{Now: clk.Now, MaxPendingBytes: 150 * 9})
	for i := range 150 {
		put(t, st, "http://a.test/hook", fmt.Sprintf(`{"n":%03d}`, i)) // 9 bytes
	}
	dead := kill(t, st, clk, "http://a.test/hook", 0, "status", 400)
	for i := range 11 { // 99 bytes: room for a chunk of 128 hooks, not for all 150
		put(t, st, "http://b.test/hook", fmt.Sprintf(`{"n":%03d}`, i))
	}
	_, url := serve(t, Options{Store: st})
	var e struct {
		Message string `json:"message"`
	}
	code := admintest.Call(t, "POST", url+"/api/dead-letters/replay", "", Selector{IDs: []string{dead}}, &e)
	if code != http.StatusInsufficientStorage || !strings.Contains(e.Message, "0 dead letters and 128 hooks replayed") {
		t.Fatalf("replay refused part way: %d %q, want 507 saying 128 hooks went back", code, e.Message)
	}
	if s, err := st.Target(targetOf(t, st, "http://a.test/hook")); err != nil || s.Pending != 128 {
		t.Fatalf("pending after the replay: %d (%v), want 128", s.Pending, err)
	}
}

// TestDeadLetterAPI: list with filters, show with bodies, replay by
// target (the hooks go back in their original order, behind what is
// pending), purge by id.
func TestDeadLetterAPI(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	metrics := NewMetrics("test")
	_, url := serve(t, Options{Store: st, Metrics: metrics, Now: clk.Now})
	a, b := "http://a.test/hook?key=1", "http://b.test/hook"

	aIDs := put(t, st, a, `{"n":1}`, `{"n":2}`, `{"n":3}`)
	put(t, st, b, `{"n":10}`, "\xff\xfe")
	bID := targetOf(t, st, b)
	clk.Add(time.Second)
	deadA1 := kill(t, st, clk, a, 2, "retries-exhausted", 503)
	clk.Add(time.Second)
	deadA2 := kill(t, st, clk, a, 1, "status", 400)
	deadB := kill(t, st, clk, b, 0, "status", 422)
	pendingA := put(t, st, a, `{"n":4}`)

	var list DeadLetterList
	if code := admintest.Call(t, "GET", url+"/api/dead-letters", "", nil, &list); code != 200 {
		t.Fatalf("list: %d", code)
	}
	if got := ids(list.DeadLetters); !slices.Equal(got, []string{deadA1, deadA2, deadB}) || list.Total != 3 {
		t.Fatalf("list = %v (total %d), want oldest first %v", got, list.Total, []string{deadA1, deadA2, deadB})
	}
	d := list.DeadLetters[0]
	if d.Target != a || d.Reason != "retries-exhausted" || d.LastStatus != 503 || d.Attempts != 1 ||
		!slices.Equal(d.HookIDs, aIDs[:2]) || d.HookCount != 2 || d.BodyBytes != 14 ||
		!d.FirstAttempt.Equal(t0.Add(time.Second)) || !d.LastAttempt.Equal(t0.Add(time.Second)) {
		t.Errorf("first dead letter = %+v", d)
	}

	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"?target=" + escape(a), []string{deadA1, deadA2}},
		{"?reason=status", []string{deadA2, deadB}},
		{"?target=" + escape(a) + "&reason=status", []string{deadA2}},
		{"?target_id=" + strconv.FormatUint(uint64(bID), 10), []string{deadB}},
		{"?limit=2", []string{deadA1, deadA2}},
		{"?limit=2&offset=2", []string{deadB}},
		{"?offset=5", []string{}},
	} {
		var l DeadLetterList
		if code := admintest.Call(t, "GET", url+"/api/dead-letters"+tt.query, "", nil, &l); code != 200 {
			t.Fatalf("list %s: %d", tt.query, code)
		}
		if got := ids(l.DeadLetters); !slices.Equal(got, tt.want) {
			t.Errorf("list %s = %v, want %v", tt.query, got, tt.want)
		}
	}

	var detail DeadLetterDetail
	if code := admintest.Call(t, "GET", url+"/api/dead-letters/"+deadB, "", nil, &detail); code != 200 {
		t.Fatalf("show: %d", code)
	}
	if len(detail.Hooks) != 2 || detail.Hooks[0].Body != `{"n":10}` || string(detail.Hooks[1].BodyBase64) != "\xff\xfe" ||
		detail.Hooks[1].Body != "" || detail.Hooks[0].Method != "POST" {
		t.Errorf("show = %+v", detail.Hooks)
	}
	if h := detail.Hooks[0].Header; h.Get("Authorization") != "[redacted]" || h.Get("Content-Type") != "application/json" {
		t.Errorf("show headers = %v, want Authorization redacted and the rest kept", h)
	}
	var eb ErrorBody
	if code := admintest.Call(t, "GET", url+"/api/dead-letters/NOSUCH", "", nil, &eb); code != 404 || eb.Message == "" || eb.Status != 404 {
		t.Errorf("show unknown = %d %+v, want 404 with a message", code, eb)
	}

	var rep ReplayResult
	if code := admintest.Call(t, "POST", url+"/api/dead-letters/replay", "", Selector{Target: a}, &rep); code != 200 {
		t.Fatalf("replay: %d", code)
	}
	if rep.DeadLetters != 2 || rep.Hooks != 3 || !slices.Equal(rep.IDs, []string{deadA1, deadA2}) {
		t.Errorf("replay = %+v", rep)
	}
	// Back in the queue behind the hook captured meanwhile, in their
	// original order, with their ids.
	batch, err := st.Claim(targetOf(t, st, a), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range batch.Hooks {
		got = append(got, h.ID)
	}
	if want := append(pendingA, aIDs...); !slices.Equal(got, want) {
		t.Errorf("queue of a after replay = %v, want %v", got, want)
	}

	var pur PurgeResult
	if code := admintest.Call(t, "DELETE", url+"/api/dead-letters?id="+deadB+"&id=NOSUCH", "", nil, &pur); code != 200 {
		t.Fatalf("purge: %d", code)
	}
	if pur.DeadLetters != 1 || !slices.Equal(pur.IDs, []string{deadB}) || !slices.Equal(pur.NotFound, []string{"NOSUCH"}) {
		t.Errorf("purge = %+v", pur)
	}
	if code := admintest.Call(t, "DELETE", url+"/api/dead-letters?id="+deadB, "", nil, &eb); code != 404 {
		t.Errorf("purge again = %d, want 404", code)
	}
	if code := admintest.Call(t, "GET", url+"/api/dead-letters", "", nil, &list); code != 200 || len(list.DeadLetters) != 0 {
		t.Errorf("list after replay and purge = %d %v", code, ids(list.DeadLetters))
	}
	var status Status
	if admintest.Call(t, "GET", url+"/api/status", "", nil, &status); status.DeadLetters != 0 {
		t.Errorf("status after purge counts %d dead letters (stale cache)", status.DeadLetters)
	}
}

// TestSelectorsAreExplicit: replay and purge refuse an empty or
// ambiguous selection instead of taking it as "all".
func TestSelectorsAreExplicit(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	put(t, st, "http://a.test/", `{}`)
	kill(t, st, clk, "http://a.test/", 0, "status", 400)
	_, url := serve(t, Options{Store: st})
	for _, tt := range []struct {
		method, query string
		body          any
	}{
		{"POST", "", nil},
		{"POST", "", Selector{}},
		{"POST", "", map[string]any{"everything": true}},
		{"POST", "?all=true", Selector{All: true}},
		{"POST", "", Selector{All: true, Target: "http://a.test/"}},
		{"POST", "", Selector{IDs: []string{"X"}, Reason: "status"}},
		{"DELETE", "", nil},
		{"DELETE", "?all=maybe", nil},
		{"DELETE", "?target_id=x", nil},
		{"DELETE", "?all=false", nil},
		// A misspelt filter is refused, not dropped: it would widen the
		// selection.
		{"POST", "?target=http://a.test/&ids=X", nil},
		{"DELETE", "?all=true&reasn=retries-exhausted", nil},
		{"POST", "?all=false", Selector{All: true}},
		// A purge takes no body: a selector there, as a replay takes it,
		// is refused, not dropped for the query's wider one.
		{"DELETE", "", Selector{All: true}},
		{"DELETE", "?target=http://a.test/", Selector{IDs: []string{"X"}}},
	} {
		var eb ErrorBody
		path := "/api/dead-letters"
		if tt.method == "POST" {
			path += "/replay"
		}
		if code := admintest.Call(t, tt.method, url+path+tt.query, "", tt.body, &eb); code != 400 || eb.Message == "" {
			t.Errorf("%s %s%s %+v = %d %+v, want 400 with a message", tt.method, path, tt.query, tt.body, code, eb)
		}
	}
	// One selector a body: what follows it is refused, not dropped.
	for _, body := range []string{`{"ids":["X"]}{"all":true}`, `{"all":true} x`} {
		resp, err := http.Post(url+"/api/dead-letters/replay", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("replay with the body %s = %d, want 400", body, resp.StatusCode)
		}
	}
	if ds, _ := st.ListDeadLetters(buffer.DeadLetterFilter{}, false); len(ds) != 1 {
		t.Fatalf("a refused selection changed the dead letters: %d left", len(ds))
	}
	var pur PurgeResult
	if code := admintest.Call(t, "DELETE", url+"/api/dead-letters?all=true", "", nil, &pur); code != 200 || pur.DeadLetters != 1 {
		t.Errorf("purge all = %d %+v", code, pur)
	}
	var rep ReplayResult
	if code := admintest.Call(t, "POST", url+"/api/dead-letters/replay", "", Selector{All: true}, &rep); code != 200 || rep.DeadLetters != 0 || rep.IDs == nil {
		t.Errorf("replay all of nothing = %d %+v, want 200 with none", code, rep)
	}
}

// TestTargetsAPI: per-target detail, sorting, paging, clear-gone.
func TestTargetsAPI(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	var changed []buffer.TargetStatus
	_, url := serve(t, Options{Store: st, Now: clk.Now, OnTargetChange: func(s buffer.TargetStatus) { changed = append(changed, s) }})
	old, big, gone := "http://old.test/", "http://big.test/", "http://gone.test/"
	put(t, st, old, `{"a":1}`)
	clk.Add(10 * time.Second)
	put(t, st, big, `{}`, `{}`, `{}`)
	put(t, st, gone, `{}`)
	clk.Add(5 * time.Second)
	fail(t, st, clk, old, 1, 503, 30*time.Second)
	clk.Add(20 * time.Second)
	goneID := targetOf(t, st, gone)
	if _, err := st.SetGone(goneID, true); err != nil {
		t.Fatal(err)
	}

	var one Target
	oldID := targetOf(t, st, old)
	if code := admintest.Call(t, "GET", url+"/api/targets/"+strconv.FormatUint(uint64(oldID), 10), "", nil, &one); code != 200 {
		t.Fatalf("get: %d", code)
	}
	if one.URL != old || one.PendingHooks != 1 || one.PendingBytes != 7 || one.OldestAgeSeconds != 35 ||
		one.Attempts != 1 || one.LastStatus != 503 || one.LastError == "" || one.InFlight == nil ||
		one.NextAttemptInSeconds == nil || *one.NextAttemptInSeconds != 10 || one.Gone {
		t.Errorf("target = %+v", one)
	}

	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"", []string{big, old, gone}},
		{"?sort=pending&order=asc", []string{gone, old, big}}, // ties by bytes
		{"?sort=age", []string{old, big, gone}},
		{"?sort=id", []string{old, big, gone}},
		{"?sort=id&order=desc", []string{gone, big, old}},
		{"?limit=1&offset=1", []string{old}},
	} {
		var tl TargetList
		if code := admintest.Call(t, "GET", url+"/api/targets"+tt.query, "", nil, &tl); code != 200 {
			t.Fatalf("list %s: %d", tt.query, code)
		}
		var got []string
		for _, x := range tl.Targets {
			got = append(got, x.URL)
		}
		if !slices.Equal(got, tt.want) || tl.Total != 3 {
			t.Errorf("list %s = %v (total %d), want %v", tt.query, got, tl.Total, tt.want)
		}
	}
	for _, q := range []string{"?sort=url", "?order=up", "?limit=0", "?limit=1001", "?offset=-1"} {
		if code := admintest.Call(t, "GET", url+"/api/targets"+q, "", nil, nil); code != 400 {
			t.Errorf("list %s = %d, want 400", q, code)
		}
	}

	path := url + "/api/targets/" + strconv.FormatUint(uint64(goneID), 10)
	if code := admintest.Call(t, "GET", path, "", nil, &one); code != 200 || !one.Gone {
		t.Fatalf("gone target = %d %+v", code, one)
	}
	if code := admintest.Call(t, "POST", path+"/clear-gone", "", nil, &one); code != 200 || one.Gone {
		t.Fatalf("clear-gone = %d %+v", code, one)
	}
	if len(changed) != 1 || changed[0].ID != goneID || changed[0].Gone {
		t.Errorf("OnTargetChange got %+v, want the cleared target", changed)
	}
	if s, _ := st.Target(goneID); s.Gone {
		t.Error("gone mark still set in the store")
	}
	for _, p := range []string{"/api/targets/999", "/api/targets/999/clear-gone"} {
		method := "GET"
		if strings.HasSuffix(p, "gone") {
			method = "POST"
		}
		if code := admintest.Call(t, method, url+p, "", nil, nil); code != 404 {
			t.Errorf("%s %s = %d, want 404", method, p, code)
		}
	}
	if code := admintest.Call(t, "GET", url+"/api/targets/abc", "", nil, nil); code != 400 {
		t.Errorf("bad id = %d, want 400", code)
	}
}

// TestErrorsAreJSON: unknown routes, wrong methods and a missing CA
// answer with a JSON message.
func TestErrorsAreJSON(t *testing.T) {
	st := openStore(t, newClock())
	_, url := serve(t, Options{Store: st})
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/nope", 404},
		{"GET", "/metrics", 404}, // no Metrics given
		{"GET", "/ca.pem", 404},
		{"PUT", "/api/targets", 405},
		{"GET", "/api/dead-letters/replay", 405}, // the action's route, not an id
	} {
		var eb ErrorBody
		if code := admintest.Call(t, tt.method, url+tt.path, "", nil, &eb); code != tt.want || eb.Message == "" {
			t.Errorf("%s %s = %d %+v, want %d with a message", tt.method, tt.path, code, eb, tt.want)
		}
	}
	// A 405 says which method the route takes (RFC 9110 15.5.6).
	resp, err := http.Get(url + "/api/dead-letters/replay")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if got := resp.Header.Get("Allow"); got != http.MethodPost {
		t.Errorf("GET /api/dead-letters/replay: Allow %q, want POST", got)
	}
}

func TestCAPEM(t *testing.T) {
	pem := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	_, url := serve(t, Options{Store: openStore(t, newClock()), CACert: pem})
	resp, err := http.Get(url + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(got) != string(pem) {
		t.Errorf("/ca.pem = %d %q, %v", resp.StatusCode, got, err)
	}
}

// TestClient: the Client reaches every route and turns error answers
// into *APIError.
func TestClient(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	put(t, st, "http://a.test/", `{"n":1}`)
	dead := kill(t, st, clk, "http://a.test/", 0, "status", 400)
	put(t, st, "http://b.test/", `{"n":2}`)
	_, url := serve(t, Options{Store: st, Token: "tok", Version: "v9", Now: clk.Now})
	ctx := context.Background()

	bad, err := NewClient(url, "wrong", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Status(ctx); err == nil || err.(*APIError).Status != 401 {
		t.Errorf("wrong token: %v, want a 401 APIError", err)
	}
	c, err := NewClient(url+"/", "tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s, err := c.Status(ctx); err != nil || s.Version != "v9" || s.PendingHooks != 1 || s.DeadLetters != 1 || !s.Ready {
		t.Errorf("Status = %+v, %v", s, err)
	}
	if tl, err := c.Targets(ctx, TargetQuery{Sort: "age"}); err != nil || len(tl.Targets) != 1 {
		t.Errorf("Targets = %+v, %v", tl, err)
	}
	if dl, err := c.DeadLetters(ctx, DeadLetterQuery{Reason: "status"}); err != nil || len(dl.DeadLetters) != 1 {
		t.Errorf("DeadLetters = %+v, %v", dl, err)
	}
	if d, err := c.DeadLetter(ctx, dead); err != nil || len(d.Hooks) != 1 || d.Hooks[0].Body != `{"n":1}` {
		t.Errorf("DeadLetter = %+v, %v", d, err)
	}
	if _, err := c.DeadLetter(ctx, "NOSUCH"); !IsNotFound(err) {
		t.Errorf("DeadLetter(NOSUCH) = %v, want not found", err)
	}
	if _, err := c.Replay(ctx, Selector{}); err == nil {
		t.Error("Replay with an empty selector went through")
	}
	if r, err := c.Replay(ctx, Selector{IDs: []string{dead}}); err != nil || r.Hooks != 1 {
		t.Errorf("Replay = %+v, %v", r, err)
	}
	if r, err := c.Purge(ctx, Selector{All: true}); err != nil || r.DeadLetters != 0 {
		t.Errorf("Purge = %+v, %v", r, err)
	}
	if rd, err := c.Ready(ctx); err != nil || !rd.Ready {
		t.Errorf("Ready = %+v, %v", rd, err)
	}
	if _, err := NewClient("127.0.0.1:9090", "", nil); err == nil {
		t.Error("NewClient accepted a URL without a scheme")
	}
}

// TestEveryAnswerIsMarked: every answer of the admin API, errors, 404s
// and /metrics included, carries the MarkHeader with the version, which
// is how the Client knows it is talking to the admin API.
func TestEveryAnswerIsMarked(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	put(t, st, "http://a.test/hook", `{"n":1}`)
	dead := kill(t, st, clk, "http://a.test/hook", 0, "status", 400)
	put(t, st, "http://b.test/hook", `{"n":2}`)
	id := strconv.FormatUint(uint64(targetOf(t, st, "http://b.test/hook")), 10)
	const token = "tok"
	srv, url := serve(t, Options{Store: st, Metrics: NewMetrics("v9"), Token: token, Version: "v9", Now: clk.Now})

	check := func(method, path, token string, want int) {
		t.Helper()
		req, err := http.NewRequest(method, url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get(MarkHeader); resp.StatusCode != want || got != "v9" {
			t.Errorf("%s %s: %d with %s %q, want %d with %q", method, path, resp.StatusCode, MarkHeader, got, want, "v9")
		}
	}
	for _, tt := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", token, 200},
		{"GET", "/metrics", token, 200},
		{"GET", "/api/status", token, 200},
		{"GET", "/api/targets", token, 200},
		{"GET", "/api/targets/" + id, token, 200},
		{"GET", "/api/targets/999", token, 404},
		{"GET", "/api/targets?limit=x", token, 400},
		{"GET", "/api/dead-letters", token, 200},
		{"GET", "/api/dead-letters/" + dead, token, 200},
		{"POST", "/api/dead-letters/replay", token, 400},
		{"GET", "/ca.pem", token, 404},
		{"GET", "/no/such/route", token, 404},
		{"PUT", "/healthz", token, 405},
		{"GET", "/api/status", "", 401},
		{"GET", "/no/such/route", "", 401},
	} {
		check(tt.method, tt.path, tt.token, tt.want)
	}
	srv.SetDraining(true)
	check("GET", "/readyz", token, 503)

	// Without a version, the mark is still there.
	_, url = serve(t, Options{Store: st})
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get(MarkHeader); got != "unknown" {
		t.Errorf("/healthz of a server without a version: %s %q, want %q", MarkHeader, got, "unknown")
	}
}

// TestClientRefusesOtherServers: an answer without the MarkHeader fails
// every call with the not-admin error (never a success, nor a not found),
// whatever its status and body: another server that answers 200 {}, one
// that answers what the admin API would, one with JSON errors of the
// admin API's shape.
func TestClientRefusesOtherServers(t *testing.T) {
	ctx := context.Background()
	calls := []struct {
		name string
		call func(*Client) error
	}{
		{"Alive", func(c *Client) error { return c.Alive(ctx) }},
		{"Ready", func(c *Client) error { _, err := c.Ready(ctx); return err }},
		{"Status", func(c *Client) error { _, err := c.Status(ctx); return err }},
		{"Targets", func(c *Client) error { _, err := c.Targets(ctx, TargetQuery{}); return err }},
		{"Target", func(c *Client) error { _, err := c.Target(ctx, 1); return err }},
		{"ClearGone", func(c *Client) error { _, err := c.ClearGone(ctx, 1); return err }},
		{"DeadLetters", func(c *Client) error { _, err := c.DeadLetters(ctx, DeadLetterQuery{}); return err }},
		{"DeadLetter", func(c *Client) error { _, err := c.DeadLetter(ctx, "01JBX"); return err }},
		{"Replay", func(c *Client) error { _, err := c.Replay(ctx, Selector{All: true}); return err }},
		{"Purge", func(c *Client) error { _, err := c.Purge(ctx, Selector{All: true}); return err }},
	}
	for _, srv := range []struct {
		name   string
		status int
		body   string
	}{
		{"200 {}", http.StatusOK, `{}`},
		{"200 with the admin API's shapes", http.StatusOK, ""},
		{"404 with the admin API's error shape", http.StatusNotFound, `{"message":"no such thing","status":404}`},
		{"503 ready", http.StatusServiceUnavailable, `{"ready":true}`},
	} {
		c, err := NewClient(admintest.Impostor(t, srv.status, srv.body), "tok", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, call := range calls {
			err := call.call(c)
			if !IsNotAdminAPI(err) || IsNotFound(err) || !strings.Contains(fmt.Sprint(err), "not hookproxy's admin API") {
				t.Errorf("%s against a server answering %s: %v, want the not-admin error", call.name, srv.name, err)
			}
		}
	}
}

func ids(ds []DeadLetter) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func escape(s string) string { return neturl.QueryEscape(s) }

// TestSelectorQueryParameters: every selector parameter a replay or purge
// takes by query (hookproxy dead purge --reason, --target-id) is one the
// refusal of unknown parameters lets through, and selects what it names.
func TestSelectorQueryParameters(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	a, b, c := "http://a.test/", "http://b.test/", "http://c.test/"
	put(t, st, a, `{"n":1}`)
	put(t, st, b, `{"n":2}`)
	put(t, st, a, `{"n":3}`)
	put(t, st, c, `{"n":4}`)
	bID := targetOf(t, st, b)
	deadA := kill(t, st, clk, a, 1, "status", 400)
	deadB := kill(t, st, clk, b, 0, "retries-exhausted", 503)
	deadA2 := kill(t, st, clk, a, 0, "retries-exhausted", 503)
	deadC := kill(t, st, clk, c, 0, "retries-exhausted", 503)
	_, url := serve(t, Options{Store: st})
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"?all=true&reason=status", []string{deadA}},
		{"?target_id=" + strconv.FormatUint(uint64(bID), 10), []string{deadB}},
		{"?target=" + escape(a), []string{deadA2}},
		{"?id=" + deadC, []string{deadC}},
		{"?all=true", []string{}},
	} {
		var pur PurgeResult
		if code := admintest.Call(t, "DELETE", url+"/api/dead-letters"+tt.query, "", nil, &pur); code != 200 {
			t.Fatalf("purge %s: %d", tt.query, code)
		}
		if !slices.Equal(pur.IDs, tt.want) {
			t.Errorf("purge %s = %v, want %v", tt.query, pur.IDs, tt.want)
		}
	}
}

// TestListQueryParameters: a parameter the lists do not take (DELETE's
// id=, a misspelt reason=) is refused with 400, not dropped for the whole
// list; every parameter the Client sends (the command line's status and
// dead list) is taken, and selects what it names.
func TestListQueryParameters(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	a, b := "http://a.test/", "http://b.test/"
	put(t, st, a, `{"n":1}`)
	put(t, st, b, `{"n":2}`)
	aID := targetOf(t, st, a)
	deadA := kill(t, st, clk, a, 0, "status", 400)
	kill(t, st, clk, b, 0, "retries-exhausted", 503)
	_, url := serve(t, Options{Store: st})
	for _, q := range []string{
		"/api/dead-letters?id=" + deadA,
		"/api/dead-letters?reasn=status",
		"/api/dead-letters?target=" + escape(a) + "&all=true",
		"/api/targets?id=1",
		"/api/targets?sort=id&limt=1",
	} {
		var eb ErrorBody
		if code := admintest.Call(t, "GET", url+q, "", nil, &eb); code != 400 || !strings.Contains(eb.Message, "unknown parameter") {
			t.Errorf("GET %s = %d %+v, want 400 with unknown parameter", q, code, eb)
		}
	}

	c, err := NewClient(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	dl, err := c.DeadLetters(ctx, DeadLetterQuery{Target: a, TargetID: uint64(aID), Reason: "status", Limit: 1})
	if err != nil || !slices.Equal(ids(dl.DeadLetters), []string{deadA}) || dl.Total != 1 {
		t.Errorf("DeadLetters with every filter = %+v, %v, want %s alone", dl, err, deadA)
	}
	if dl, err := c.DeadLetters(ctx, DeadLetterQuery{Limit: 1, Offset: 1}); err != nil || dl.Total != 2 || len(dl.DeadLetters) != 1 {
		t.Errorf("DeadLetters page 2 = %+v, %v", dl, err)
	}
	put(t, st, a, `{"n":3}`)
	put(t, st, b, `{"n":4}`)
	if tl, err := c.Targets(ctx, TargetQuery{Sort: "id", Order: "desc", Limit: 1, Offset: 1}); err != nil || tl.Total != 2 || len(tl.Targets) != 1 {
		t.Errorf("Targets with every parameter = %+v, %v", tl, err)
	}
}

// TestClientNoRouteIsNotNotFound: a Client whose URL has a wrong path gets
// the 404 of a path that is no route for every call; IsNotFound, which
// says the dead letter or target asked for is not there, is false for it.
func TestClientNoRouteIsNotNotFound(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	put(t, st, "http://a.test/", `{}`)
	aID := targetOf(t, st, "http://a.test/")
	dead := kill(t, st, clk, "http://a.test/", 0, "status", 400)
	_, url := serve(t, Options{Store: st})
	ctx := context.Background()
	good, err := NewClient(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := good.DeadLetter(ctx, "NOSUCH"); !IsNotFound(err) {
		t.Errorf("DeadLetter(NOSUCH) = %v, want not found", err)
	}
	wrong, err := NewClient(url+"/api", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	_, err = wrong.DeadLetter(ctx, dead)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || IsNotFound(err) {
		t.Errorf("DeadLetter at a wrong path: %v (IsNotFound %t), want a 404 APIError that is not 'not found'", err, IsNotFound(err))
	}
	if _, err := wrong.Target(ctx, uint64(aID)); IsNotFound(err) {
		t.Errorf("Target at a wrong path: %v is 'not found'", err)
	}
}

// TestLongChangesAreAnswered: a replay (or a purge) that takes longer
// than the admin server's write timeout still gets its answer. A replay
// is one synced write per dead letter, and tens of thousands of them
// take minutes; the server finishes it whoever waits, so an answer cut
// by the timeout would tell a client "connection lost" for a replay that
// was done. A write timeout of a nanosecond stands for "shorter than the
// change takes": any change outlasts it.
func TestLongChangesAreAnswered(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	put(t, st, "http://a.test/hook", `{"n":1}`)
	replayed := kill(t, st, clk, "http://a.test/hook", 0, "status", 400)
	put(t, st, "http://a.test/hook", `{"n":2}`)
	purged := kill(t, st, clk, "http://a.test/hook", 1, "status", 400)
	srv, err := New(Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	srv.srv.WriteTimeout = time.Nanosecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	c, err := NewClient("http://"+ln.Addr().String(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Replay(t.Context(), Selector{IDs: []string{replayed}}); err != nil || r.DeadLetters != 1 {
		t.Errorf("replay past the write timeout = %+v, %v; want its answer, 1 dead letter replayed", r, err)
	}
	if r, err := c.Purge(t.Context(), Selector{IDs: []string{purged}}); err != nil || r.DeadLetters != 1 {
		t.Errorf("purge past the write timeout = %+v, %v; want its answer, 1 dead letter purged", r, err)
	}
}
