package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// batchSizes returns the number of hooks in each batch, in arrival order.
func batchSizes(tb testing.TB, got []received) []int {
	tb.Helper()
	var out []int
	for _, r := range got {
		out = append(out, len(r.hooks(tb)))
	}
	return out
}

// allPKs concatenates the pks of every batch, in arrival order.
func allPKs(tb testing.TB, got []received) []int {
	tb.Helper()
	var out []int
	for _, r := range got {
		out = append(out, pks(tb, r.hooks(tb))...)
	}
	return out
}

func seq(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// checkBatchHeaders checks what every batch POST must carry.
func checkBatchHeaders(tb testing.TB, r received) {
	tb.Helper()
	if r.Method != http.MethodPost {
		tb.Errorf("batch method = %s, want POST", r.Method)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("batch Content-Type = %q", ct)
	}
	id := r.Header.Get("Idempotency-Key")
	if len(id) != 26 || r.Header.Get("X-Hookproxy-Batch-Id") != id {
		tb.Errorf("batch ids: Idempotency-Key %q, X-Hookproxy-Batch-Id %q", id, r.Header.Get("X-Hookproxy-Batch-Id"))
	}
	if got, want := r.Header.Get("X-Hookproxy-Batch-Size"), itoa(len(r.hooks(tb))); got != want {
		tb.Errorf("X-Hookproxy-Batch-Size = %q, want %q", got, want)
	}
	if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, "hookproxy/") {
		tb.Errorf("User-Agent = %q, want hookproxy/<version>", ua)
	}
}

// checkAccepted checks the app got a 202 with the hook id for each hook.
func checkAccepted(tb testing.TB, resps []clientResponse) {
	tb.Helper()
	for i, r := range resps {
		id := r.Headers["X-Hookproxy-Hook-Id"]
		if r.Status != http.StatusAccepted || len(id) != 26 {
			tb.Fatalf("hook %d: status %d, id %q, body %s; want 202 with an id", i, r.Status, id, r.Body)
		}
		var body struct {
			HookID string `json:"hook_id"`
		}
		if err := json.Unmarshal([]byte(r.Body), &body); err != nil || body.HookID != id {
			tb.Fatalf("hook %d: body %q does not carry the id %s", i, r.Body, id)
		}
	}
}

// TestBatchingModesThroughPythonRequests drives each batching mode of the
// old batch deliverer's contract with the app's real client.
func TestBatchingModesThroughPythonRequests(t *testing.T) {
	tests := []struct {
		name     string
		settings map[string]string
		hooks    int
		early    int   // hooks that arrive before the stop: full batches
		want     []int // batch sizes, in order
	}{
		// The windows are real time. Those of size and mixed are an hour,
		// so the full batches must go out by size; the remainder goes at
		// the stop's drain. The time window is long enough that python
		// posts every hook well within it even on a loaded machine (the
		// exact window behaviour is tested on a fake clock in sender/).
		// size alone: full batches at once, the remainder later.
		{"size", map[string]string{"BATCH_SIZE": "3", "BATCH_MAX_WAIT": "1h"}, 7, 6, []int{3, 3, 1}},
		// time alone: everything that arrived within the window, in one POST.
		{"time", map[string]string{"BATCH_TIME": "5"}, 5, 5, []int{5}},
		// both: whichever first; size first here...
		{"mixed", map[string]string{"BATCH_SIZE": "3", "BATCH_TIME": "1h"}, 7, 6, []int{3, 3, 1}},
		// ...and time first here: the window sends what is there, below
		// the size, before the stop.
		{"mixed, time first", map[string]string{"BATCH_SIZE": "100", "BATCH_TIME": "5"}, 4, 4, []int{4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, nil)
			hp := startHookproxy(t, tt.settings)
			path := "/hooks/" + strings.NewReplacer(", ", "-", " ", "-").Replace(tt.name) + "?token=abc"
			url := rc.srv.URL + path
			checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(url, 0, tt.hooks)))
			got := rc.waitHooks(t, tt.early)
			if n := len(allPKs(t, got)); n != tt.early {
				t.Fatalf("%d hooks arrived before the stop, want the %d of full batches", n, tt.early)
			}
			hp.stop(t) // drains what waits for its window
			got = rc.waitHooks(t, tt.hooks)
			if sizes := batchSizes(t, got); !slices.Equal(sizes, tt.want) {
				t.Fatalf("batch sizes = %v, want %v", sizes, tt.want)
			}
			if p := allPKs(t, got); !slices.Equal(p, seq(0, tt.hooks)) {
				t.Fatalf("hooks arrived as %v, want arrival order", p)
			}
			ids := map[string]bool{}
			for _, r := range got {
				checkBatchHeaders(t, r)
				if r.Path != path {
					t.Errorf("batch went to %s", r.Path)
				}
				ids[r.Header.Get("Idempotency-Key")] = true
			}
			if len(ids) != len(got) {
				t.Errorf("%d batches share %d ids", len(got), len(ids))
			}
		})
	}
}

// TestNoBatchingForwardsEachHookAlone: with neither size nor time, each
// hook goes alone with its original body and end-to-end headers.
func TestNoBatchingForwardsEachHookAlone(t *testing.T) {
	rc := newReceiver(t, nil)
	hp := startHookproxy(t, nil)
	reqs := hookRequests(rc.srv.URL+"/single", 0, 3)
	for i := range reqs {
		reqs[i].Headers["X-App-Header"] = "from-app-" + itoa(i)
	}
	checkAccepted(t, postWithPython(t, hp.proxyURL, reqs))
	got := rc.waitFor(t, "3 requests", func(g []received) bool { return len(g) >= 3 })
	ids := map[string]bool{}
	for i, r := range got {
		if string(r.Body) != reqs[i].Body {
			t.Errorf("hook %d body = %s, want the original %s", i, r.Body, reqs[i].Body)
		}
		if r.Header.Get("X-App-Header") != "from-app-"+itoa(i) || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("hook %d lost its headers: %v", i, r.Header)
		}
		if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, "python-requests/") {
			t.Errorf("hook %d User-Agent = %q, want the app's", i, ua)
		}
		key := r.Header.Get("Idempotency-Key")
		if len(key) != 26 || ids[key] || r.Header.Get("X-Hookproxy-Batch-Id") != key {
			t.Errorf("hook %d: Idempotency-Key %q (missing, or repeated), X-Hookproxy-Batch-Id %q: want one new id in both",
				i, key, r.Header.Get("X-Hookproxy-Batch-Id"))
		}
		ids[key] = true
		if r.Header.Get("Proxy-Connection") != "" || r.Header.Get("Proxy-Authorization") != "" {
			t.Errorf("hook %d carries proxy headers: %v", i, r.Header)
		}
	}
}

// TestPathEscapesReachReceiver: python's urllib (the app's client when
// it is not requests) sends a path as it is given, "|" and all; the hook
// is delivered, and a GET passed through, to the path the app named,
// its "%2F" kept (net/http rebuilt such a path decoded: "/files/a/b%7Cc",
// another path).
func TestPathEscapesReachReceiver(t *testing.T) {
	rc := newReceiver(t, nil)
	hp := startHookproxy(t, nil)
	script := `import sys, urllib.request
proxy, url = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
hook = urllib.request.Request(url, data=b'{"hook": 1}', headers={"Content-Type": "application/json"})
print(opener.open(hook).status, opener.open(url).status)
`
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", script, hp.proxyURL, rc.srv.URL+"/files/a%2Fb|c?x=1|2")
	cmd.Env = pythonEnv()
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "202 200" {
		t.Fatalf("urllib: %v: %s, want 202 to the hook and 200 to the GET", err, out)
	}
	got := rc.waitFor(t, "the GET and the hook", func(g []received) bool { return len(g) >= 2 })
	for _, r := range got {
		if r.Path != "/files/a%2Fb%7Cc?x=1|2" {
			t.Errorf("%s arrived for %s, want /files/a%%2Fb%%7Cc?x=1|2", r.Method, r.Path)
		}
	}
}

// TestPassThroughReachesReceiverUnchanged: what is not a hook goes to its
// destination with the app's headers and the app gets the real answer.
func TestPassThroughReachesReceiverUnchanged(t *testing.T) {
	rc := newReceiver(t, func(n int) int { return []int{200, 201, 404}[n%3] })
	hp := startHookproxy(t, map[string]string{"BATCH_SIZE": "10"})
	appHeaders := map[string]string{"X-Trace": "t1", "Authorization": "Token s3cret", "Cookie": "sessionid=abc; csrftoken=x",
		"Accept": "text/html", "Accept-Encoding": "gzip, deflate", "User-Agent": "python-requests/app"}
	reqs := []clientRequest{
		{Method: "GET", URL: rc.srv.URL + "/page?q=1", Headers: appHeaders},
		{Method: "POST", URL: rc.srv.URL + "/form", Body: "a=1&b=2", Headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
		{Method: "PUT", URL: rc.srv.URL + "/put", Body: `{"put":true}`, Headers: map[string]string{"Content-Type": "application/json"}},
	}
	resps := postWithPython(t, hp.proxyURL, reqs)
	got := rc.requests()
	if len(got) != 3 {
		t.Fatalf("receiver got %d requests, want 3 (at once, not buffered)", len(got))
	}
	for i, want := range []int{200, 201, 404} {
		if resps[i].Status != want || resps[i].Headers["X-Receiver"] != "yes" || !strings.HasPrefix(resps[i].Body, "receiver saw") {
			t.Errorf("response %d = %d %v %q, want the receiver's %d", i, resps[i].Status, resps[i].Headers, resps[i].Body, want)
		}
	}
	if got[0].Method != "GET" || got[0].Path != "/page?q=1" {
		t.Errorf("GET arrived as %+v", got[0])
	}
	for k, v := range appHeaders {
		if g := got[0].Header.Values(k); len(g) != 1 || g[0] != v {
			t.Errorf("GET header %s arrived as %q, want %q", k, g, v)
		}
	}
	if got[1].Method != "POST" || string(got[1].Body) != "a=1&b=2" || got[1].Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("form POST arrived as %+v", got[1])
	}
	if got[2].Method != "PUT" || string(got[2].Body) != `{"put":true}` {
		t.Errorf("JSON PUT (not a capture method) arrived as %+v", got[2])
	}
	for i, r := range got {
		if r.Header.Get("Proxy-Connection") != "" {
			t.Errorf("request %d carries Proxy-Connection", i)
		}
	}
}

// TestOversizedHookIs413: the app gets a clear answer and nothing is kept.
func TestOversizedHookIs413(t *testing.T) {
	rc := newReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"MAX_BODY_BYTES": "1KiB"})
	big := `{"data":"` + strings.Repeat("x", 2000) + `"}`
	resps := postWithPython(t, hp.proxyURL, []clientRequest{
		{Method: "POST", URL: rc.srv.URL + "/big", Body: big, Headers: map[string]string{"Content-Type": "application/json"}},
		{Method: "POST", URL: rc.srv.URL + "/small", Body: `{"ok":1}`, Headers: map[string]string{"Content-Type": "application/json"}},
	})
	if resps[0].Status != http.StatusRequestEntityTooLarge || !strings.Contains(resps[0].Body, "error") {
		t.Fatalf("oversized: %d %s, want 413 with a JSON error", resps[0].Status, resps[0].Body)
	}
	if resps[1].Status != http.StatusAccepted {
		t.Fatalf("the next hook on the same connection: %d %s, want 202", resps[1].Status, resps[1].Body)
	}
	rc.waitFor(t, "the small hook", func(g []received) bool { return len(g) >= 1 })
	// Whatever was kept is sent by the stop's drain at the latest.
	hp.stop(t)
	if got := rc.requests(); len(got) != 1 || got[0].Path != "/small" {
		paths := make([]string, len(got))
		for i, r := range got {
			paths[i] = r.Path
		}
		t.Fatalf("receiver got %v, want only /small", paths)
	}
}
