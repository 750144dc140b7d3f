package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"hookproxy/admin"
	"hookproxy/admin/admintest"
	"hookproxy/sender"
)

func TestDeliveryConfig(t *testing.T) {
	cfg, err := loadConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RetryBackoff != sender.BackoffExponential || time.Duration(cfg.RetryMaxInterval) != 10*time.Minute ||
		time.Duration(cfg.RetryMaxAge) != 24*time.Hour || cfg.BatchMaxBytes != 0 || cfg.FollowRedirects ||
		cfg.GoneWebhook != "" || len(cfg.SigningSecret) != 0 || cfg.AllowPrivateTargets || len(cfg.AllowCIDRs) != 0 {
		t.Errorf("delivery defaults = %+v", cfg)
	}
	if g := cfg.egressGuard(); g.AllowPrivate || len(g.Allow) != 0 {
		t.Errorf("default guard %+v, want public addresses only", g)
	}

	secret := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	cfg, err = loadConfig([]string{
		"HOOKPROXY_RETRIES=-1", "HOOKPROXY_RETRY_BACKOFF=fixed", "HOOKPROXY_RETRY_MAX_INTERVAL=90",
		"HOOKPROXY_RETRY_MAX_AGE=0", "HOOKPROXY_BATCH_MAX_BYTES=256KiB", "HOOKPROXY_FOLLOW_REDIRECTS=true",
		"HOOKPROXY_GONE_WEBHOOK=http://127.0.0.1:8000/hooks/gone", "HOOKPROXY_SIGNING_SECRET=" + secret + "," + secret,
		"HOOKPROXY_ALLOW_PRIVATE_TARGETS=true", "HOOKPROXY_ALLOW_CIDRS=10.1.0.0/16, 192.0.2.7",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Retries != sender.RetryForever || cfg.RetryBackoff != sender.BackoffFixed ||
		time.Duration(cfg.RetryMaxInterval) != 90*time.Second || cfg.RetryMaxAge != 0 || cfg.BatchMaxBytes != 256<<10 ||
		!cfg.FollowRedirects || len(cfg.SigningSecret) != 2 || !cfg.AllowPrivateTargets {
		t.Errorf("config = %+v", cfg)
	}
	g := cfg.egressGuard()
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.7/32")}
	if !g.AllowPrivate || len(g.Allow) != 2 || g.Allow[0] != want[0] || g.Allow[1] != want[1] {
		t.Errorf("guard %+v, want private networks and %v", g, want)
	}

	for _, tt := range []struct{ env, want, secret string }{
		{"HOOKPROXY_RETRY_BACKOFF=linear", `HOOKPROXY_RETRY_BACKOFF="linear"`, ""},
		{"HOOKPROXY_RETRY_MAX_INTERVAL=0", "HOOKPROXY_RETRY_MAX_INTERVAL=0:", ""},
		{"HOOKPROXY_RETRY_MAX_AGE=-1h", "HOOKPROXY_RETRY_MAX_AGE=-1h:", ""},
		{"HOOKPROXY_BATCH_MAX_BYTES=big", `HOOKPROXY_BATCH_MAX_BYTES="big"`, ""},
		{"HOOKPROXY_FOLLOW_REDIRECTS=maybe", `HOOKPROXY_FOLLOW_REDIRECTS="maybe"`, ""},
		{"HOOKPROXY_ALLOW_PRIVATE_TARGETS=yes please", `HOOKPROXY_ALLOW_PRIVATE_TARGETS="yes please"`, ""},
		{"HOOKPROXY_ALLOW_CIDRS=10.0.0.1/8", `HOOKPROXY_ALLOW_CIDRS="10.0.0.1/8": parse allowed CIDR "10.0.0.1/8"`, ""},
		{"HOOKPROXY_GONE_WEBHOOK=app/gone?token=t0ps3cret", "HOOKPROXY_GONE_WEBHOOK=(hidden)", "t0ps3cret"},
		{"HOOKPROXY_SIGNING_SECRET=" + secret + ",whsec_c2VjcmV0LXNlY3JldA==", "HOOKPROXY_SIGNING_SECRET=(hidden): secret 2 of 2: signing secret holds 13 bytes", "c2VjcmV0LXNlY3JldA"},
		{"HOOKPROXY_SIGNING_SECRET=hunter2!", "HOOKPROXY_SIGNING_SECRET=(hidden): secret 1 of 1: signing secret is not whsec_ followed by standard base64", "hunter2"},
	} {
		_, err := loadConfig([]string{tt.env})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to name %s", tt.env, err, tt.want)
		}
		if tt.secret != "" && err != nil && strings.Contains(err.Error(), tt.secret) {
			t.Errorf("%s: err = %v repeats the secret", tt.env, err)
		}
	}
}

// TestLoopbackTargetBlocked: with the default guard a loopback target is
// dead-lettered at once with reason blocked and gets nothing, while a
// request the app passes through to the same host still works.
func TestLoopbackTargetBlocked(t *testing.T) {
	rc := newReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"ALLOW_PRIVATE_TARGETS": "false", "RETRIES": "5"})
	target := rc.srv.URL + "/blocked"
	reqs := append(hookRequests(target, 0, 1), clientRequest{Method: "GET", URL: rc.srv.URL + "/page"})
	resps := postWithPython(t, hp.proxyURL, reqs)
	if resps[0].Status != http.StatusAccepted || resps[1].Status != http.StatusOK {
		t.Fatalf("answers %d, %d; want 202 for the hook and 200 for the pass-through GET", resps[0].Status, resps[1].Status)
	}
	waitLogs(t, hp.logs, "batch given up", 1)

	var list admin.DeadLetterList
	if code := admintest.Call(t, "GET", hp.adminURL()+"/api/dead-letters", "", nil, &list); code != http.StatusOK || list.Total != 1 {
		t.Fatalf("dead letters: %d, %+v", code, list)
	}
	d := list.DeadLetters[0]
	if d.Target != target || d.Reason != sender.ReasonBlocked || d.Attempts != 1 ||
		!strings.Contains(d.Detail, "127.0.0.1 is loopback") || !strings.Contains(d.Detail, "HOOKPROXY_ALLOW_PRIVATE_TARGETS") {
		t.Errorf("dead letter %+v, want reason blocked after one attempt, naming the address and the setting", d)
	}
	got := rc.requests()
	if len(got) != 1 || got[0].Method != "GET" || got[0].Path != "/page" {
		t.Errorf("receiver got %+v, want only the passed-through GET", got)
	}
}

// TestGoneEndToEnd: a 410 marks the target gone and calls the gone
// webhook; later hooks are dead-lettered unsent until the admin API
// clears the mark, then delivery resumes.
func TestGoneEndToEnd(t *testing.T) {
	rc := newReceiver(t, func(n int) int {
		if n == 0 {
			return http.StatusGone
		}
		return http.StatusOK
	})
	app := newReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"GONE_WEBHOOK": app.srv.URL + "/hooks/gone"})
	target := rc.srv.URL + "/subscription/3"

	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(target, 0, 1)))
	notice := app.waitFor(t, "the gone webhook", func(g []received) bool { return len(g) == 1 })[0]
	var body struct {
		Target  string   `json:"target"`
		HookIDs []string `json:"hook_ids"`
	}
	if err := json.Unmarshal(notice.Body, &body); err != nil {
		t.Fatalf("gone webhook body %s: %v", notice.Body, err)
	}
	var list admin.DeadLetterList
	if code := admintest.Call(t, "GET", hp.adminURL()+"/api/dead-letters", "", nil, &list); code != http.StatusOK || list.Total != 1 {
		t.Fatalf("dead letters: %d, %+v", code, list)
	}
	first := list.DeadLetters[0]
	if notice.Method != "POST" || notice.Path != "/hooks/gone" || body.Target != target ||
		len(body.HookIDs) != 1 || body.HookIDs[0] != first.HookIDs[0] || first.Reason != sender.ReasonGone {
		t.Fatalf("gone webhook %s %s %s, dead letter %+v", notice.Method, notice.Path, notice.Body, first)
	}

	// A later hook is dead-lettered without a send.
	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(target, 1, 1)))
	waitLogs(t, hp.logs, "batch given up", 2)
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("the gone target got %d requests, want only the one answered 410", n)
	}

	// The operator clears the mark; the next hook is delivered.
	resp, err := http.Post(hp.adminURL()+"/api/targets/"+strconv.FormatUint(first.TargetID, 10)+"/clear-gone", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("clear-gone: %d", resp.StatusCode)
	}
	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(target, 2, 1)))
	got := rc.waitFor(t, "the hook after the clear", func(g []received) bool { return len(g) == 2 })
	if !strings.Contains(string(got[1].Body), `"pk":2`) {
		t.Errorf("delivered %s, want hook 2", got[1].Body)
	}
}

// TestSignaturesVerifyWithREADMEPython: deliveries signed with two
// secrets verify, with either, by the Python snippet the README gives
// receivers.
func TestSignaturesVerifyWithREADMEPython(t *testing.T) {
	secrets := []string{
		"whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("new-key!"), 4)),
		"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}
	rc := newReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"SIGNING_SECRET": strings.Join(secrets, ","), "BATCH_SIZE": "2"})
	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(rc.srv.URL+"/signed", 0, 2)))
	got := rc.waitHooks(t, 2)[0]

	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(readme), "### Signatures")
	_, code, ok := strings.Cut(after, "```python\n")
	code, _, _ = strings.Cut(code, "```")
	if !ok || !strings.Contains(code, "def verify(") {
		t.Fatal("no python verify snippet under the README's Signatures heading")
	}
	driver := code + `
import json, sys
req = json.load(sys.stdin)
headers = {k.lower(): v for k, v in req["headers"].items()}
body = base64.b64decode(req["body"])
out = [verify(s, headers, body) for s in req["secrets"]]
out.append(verify(req["secrets"][0], headers, body + b" "))
out.append(verify("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, body))
json.dump(out, sys.stdout)
`
	headers := map[string]string{}
	for k := range got.Header {
		headers[k] = got.Header.Get(k)
	}
	in, _ := json.Marshal(map[string]any{"secrets": secrets, "headers": headers, "body": got.Body})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", driver)
	cmd.Env = pythonEnv()
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	if want := "[true, true, false, false]"; strings.TrimSpace(string(out)) != want {
		t.Errorf("README verify (secret 1, secret 2, tampered body, other secret) = %s, want %s", out, want)
	}
	if got.Header.Get("Webhook-Id") != got.Header.Get("Idempotency-Key") {
		t.Errorf("webhook-id %q, want the batch id %q", got.Header.Get("Webhook-Id"), got.Header.Get("Idempotency-Key"))
	}
}

// TestGoneWebhookCheckedByTheGuard: a gone webhook whose host is an
// address (or localhost) the egress guard refuses would never get a
// notice: it is refused at start with an error that names the setting
// that would allow it and the host, never the path or the query (they
// may hold a token). A host name is not resolved: it is judged at each
// notice.
func TestGoneWebhookCheckedByTheGuard(t *testing.T) {
	for _, tt := range []struct {
		environ []string
		want    []string // nil: accepted
	}{
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://127.0.0.1:8000/hooks/gone?token=t0ps3cret"},
			[]string{"HOOKPROXY_GONE_WEBHOOK=(hidden)", "host 127.0.0.1", "loopback", "HOOKPROXY_ALLOW_PRIVATE_TARGETS=true or HOOKPROXY_ALLOW_CIDRS"}},
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://[::1]:8000/gone"}, []string{"HOOKPROXY_GONE_WEBHOOK=(hidden)", "host ::1"}},
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://LocalHost:8000/gone"}, []string{"HOOKPROXY_GONE_WEBHOOK=(hidden)", "host LocalHost"}},
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://10.0.0.5/gone"}, []string{"HOOKPROXY_GONE_WEBHOOK=(hidden)", "private"}},
		// Metadata addresses stay closed to ALLOW_PRIVATE_TARGETS.
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://169.254.169.254/gone", "HOOKPROXY_ALLOW_PRIVATE_TARGETS=true"},
			[]string{"HOOKPROXY_GONE_WEBHOOK=(hidden)", "HOOKPROXY_ALLOW_CIDRS"}},
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://127.0.0.1:8000/gone", "HOOKPROXY_ALLOW_PRIVATE_TARGETS=true"}, nil},
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://127.0.0.1:8000/gone", "HOOKPROXY_ALLOW_CIDRS=127.0.0.0/8"}, nil},
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://10.0.0.5/gone", "HOOKPROXY_ALLOW_CIDRS=10.0.0.5"}, nil},
		// localhost is dialled on both families: one allowed is enough.
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://localhost:8000/gone", "HOOKPROXY_ALLOW_CIDRS=::1"}, nil},
		{[]string{"HOOKPROXY_GONE_WEBHOOK=http://app:8000/gone"}, nil},
		{[]string{"HOOKPROXY_GONE_WEBHOOK=https://8.8.8.8/gone"}, nil},
	} {
		_, err := loadConfig(tt.environ)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%v: %v, want it accepted", tt.environ, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%v: accepted, want it refused: every notice would be blocked", tt.environ)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: err = %v, want it to name %s", tt.environ, err, w)
			}
		}
		if strings.Contains(err.Error(), "t0ps3cret") || strings.Contains(err.Error(), "/gone") {
			t.Errorf("%v: err = %v repeats the URL's path or query", tt.environ, err)
		}
	}
}

// TestRetriesThroughTheSettings: HOOKPROXY_RETRIES, _RETRY_INTERVAL,
// _RETRY_BACKOFF and _ON_GIVE_UP, as the operator sets them, reach the
// sender: a receiver that keeps failing gets the first attempt and two
// retries of one batch, with the same Idempotency-Key, at least the
// interval apart; then the batch is dead-lettered with its reason, or
// dropped with discard.
func TestRetriesThroughTheSettings(t *testing.T) {
	const interval = 300 * time.Millisecond
	for _, tt := range []struct {
		onGiveUp string
		dead     int
	}{{"dead-letter", 1}, {"discard", 0}} {
		t.Run(tt.onGiveUp, func(t *testing.T) {
			rc := newReceiver(t, func(int) int { return http.StatusServiceUnavailable })
			hp := startHookproxy(t, map[string]string{"RETRIES": "2", "RETRY_INTERVAL": interval.String(),
				"RETRY_BACKOFF": "fixed", "ON_GIVE_UP": tt.onGiveUp})
			postHooks(t, proxyClient(t, hp.proxyURL), []clientRequest{{URL: rc.srv.URL + "/down", Body: `{"n":1}`}})
			deadline := time.After(waitLimit)
			for !strings.Contains(hp.logs.String(), `"batch given up"`) {
				select {
				case <-hp.logs.wait():
				case <-deadline:
					t.Fatalf("the batch was not given up:\n%s", hp.logs.String())
				}
			}
			got := rc.requests()
			if len(got) != 3 {
				t.Fatalf("receiver got %d attempts, want 3 (RETRIES=2)", len(got))
			}
			for i := 1; i < len(got); i++ {
				if !sameBatch(got[0], got[i]) {
					t.Errorf("attempt %d has Idempotency-Key %q, the first %q", i+1, got[i].Header.Get("Idempotency-Key"),
						got[0].Header.Get("Idempotency-Key"))
				}
				if gap := got[i].At.Sub(got[i-1].At); gap < interval {
					t.Errorf("attempt %d came %v after the one before, under RETRY_INTERVAL %v", i+1, gap, interval)
				}
			}
			var list admin.DeadLetterList
			adminURL := "http://" + hp.logs.field("admin listening", "admin_addr")
			if code := admintest.Call(t, "GET", adminURL+"/api/dead-letters", "", nil, &list); code != http.StatusOK {
				t.Fatalf("list dead letters: %d", code)
			}
			if len(list.DeadLetters) != tt.dead {
				t.Fatalf("%d dead letters with ON_GIVE_UP=%s, want %d", len(list.DeadLetters), tt.onGiveUp, tt.dead)
			}
			if tt.dead == 1 {
				if d := list.DeadLetters[0]; d.Reason != sender.ReasonRetriesExhausted || d.Attempts != 3 || d.LastStatus != http.StatusServiceUnavailable {
					t.Errorf("dead letter: reason %q, %d attempts, last status %d; want retries-exhausted after 3, 503", d.Reason, d.Attempts, d.LastStatus)
				}
			}
		})
	}
}

// sameBatch reports whether a and b carry the same real batch id.
func sameBatch(a, b received) bool {
	k := a.Header.Get("Idempotency-Key")
	return len(k) == 26 && k == b.Header.Get("Idempotency-Key")
}
