package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode"

	"hookproxy/admin"
	"hookproxy/admin/admintest"
	"hookproxy/buffer"
	"hookproxy/proxy"
)

// cliRun runs an operator command in-process against adminURL and
// returns its output and error.
func cliRun(tb testing.TB, adminURL string, args ...string) (stdout, stderr string, err error) {
	tb.Helper()
	var out, errb bytes.Buffer
	environ := []string{"HOOKPROXY_ADMIN_URL=" + adminURL}
	err = run(context.Background(), args, environ, &out, &errb)
	return out.String(), errb.String(), err
}

// TestStatusOutput: "hookproxy status" on a fixed scenario (store and
// server on a fixed clock) prints exactly this.
func TestStatusOutput(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store, err := buffer.Open(buffer.Options{Dir: t.TempDir(), GCInterval: -1, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	put := func(target string, bodies ...string) buffer.TargetID {
		t.Helper()
		for _, b := range bodies {
			if err := store.Put(context.Background(), &buffer.Hook{Target: target, Body: []byte(b)}); err != nil {
				t.Fatal(err)
			}
		}
		sts, _ := store.Targets()
		for _, s := range sts {
			if s.URL == target {
				return s.ID
			}
		}
		t.Fatalf("no target %s", target)
		return 0
	}
	crm := put("https://crm.example/hooks?token=secret", `{"pk":1}`, `{"pk":2}`)
	now = now.Add(30 * time.Second)
	billing := put("http://billing.example/in", `{"pk":3}`, `{"pk":4}`, `{"pk":5}`)
	gone := put("http://old.example/hook", `{"pk":6}`)
	if _, err := store.SetGone(gone, true); err != nil {
		t.Fatal(err)
	}
	// crm's batch failed once and is tried again in 20s; a batch of two
	// of billing's hooks was dead-lettered.
	b, err := store.Claim(crm, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.RecordAttempt(crm, b.ID, buffer.Failure{At: now, Status: 503, Error: "HTTP 503 Service Unavailable", Next: now.Add(20 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if b, err = store.Claim(billing, 2, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := store.GiveUp(billing, b.ID, "status", buffer.Failure{At: now, Status: 422, Error: "HTTP 422 Unprocessable Entity"}, buffer.NextClaim{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(15 * time.Second)

	adm, err := admin.New(admin.Options{Store: store, Version: "v1.4.0", Now: clock, MaxPendingBytes: 1 << 20,
		DiskUsage: func() (int64, int64) { return 3 << 20, 512 << 10 }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(adm)
	defer srv.Close()

	out, errOut, err := cliRun(t, srv.URL, "status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, errOut)
	}
	want := `hookproxy v1.4.0: ready
pending:      4 hooks, 32 B, 3 targets (quota 1.0 MiB); oldest 45s ago
dead letters: 1 (2 hooks)
gone targets: 1
disk:         3.5 MiB

ID  TARGET                         PENDING  BYTES  OLDEST  ATTEMPTS  NEXT   LAST ERROR                    GONE
1   https://crm.example/hooks?...  2        16 B   45s     1         in 5s  HTTP 503 Service Unavailable
2   http://billing.example/in      1        8 B    15s     0         -      -
3   http://old.example/hook        1        8 B    15s     0         -      -                             gone
`
	if out != want {
		t.Errorf("status output:\n%s\nwant:\n%s", out, want)
	}
}

// waitLogs waits until logs hold n lines with message msg.
func waitLogs(tb testing.TB, logs *lockedBuffer, msg string, n int) {
	tb.Helper()
	deadline := time.After(waitLimit)
	for {
		changed := logs.wait() // before the count, so a write in between is not missed
		if strings.Count(logs.String(), `"msg":"`+msg+`"`) >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("waited for %d log lines %q\n%s", n, msg, logs.String())
		}
	}
}

// cliBinary runs the built hookproxy binary as an operator command with
// the admin URL and token in its environment, checks its exit code and
// returns its standard output and error.
func cliBinary(tb testing.TB, adminURL, token string, wantCode int, args ...string) (string, string) {
	tb.Helper()
	bin, err := buildBinary()
	if err != nil {
		tb.Fatalf("build: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"HOOKPROXY_ADMIN_URL=" + adminURL, "HOOKPROXY_ADMIN_TOKEN=" + token}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		tb.Fatalf("hookproxy %v: %v", args, err)
	}
	if code != wantCode {
		tb.Fatalf("hookproxy %s: exit code %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

func decode[T any](tb testing.TB, s string) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		tb.Fatalf("decode %T: %v\n%s", v, err, s)
	}
	return v
}

// TestDeadLettersThroughTheCLI: batches a receiver refuses become dead
// letters; the CLI binary lists, shows, replays by target (delivered, in
// order, once the receiver is healthy) and purges by id, with exit codes
// for scripts; the admin listener wants the token everywhere but
// /healthz.
func TestDeadLettersThroughTheCLI(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	rc := newReceiver(t, func(int) int {
		if broken.Load() {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	const token = "op-token"
	// The receiver is on loopback, which the egress guard refuses unless told.
	hp := startHookproxy(t, map[string]string{"BATCH_SIZE": "2", "ADMIN_TOKEN": token, "ALLOW_PRIVATE_TARGETS": "true"})
	adminURL := "http://" + hp.logs.field("admin listening", "admin_addr")
	// A query with "&", which JSON output must not turn into \u0026: an
	// operator copies a target from it into --target.
	a, b := rc.srv.URL+"/a?x=1&y=2", rc.srv.URL+"/b"
	c := proxyClient(t, hp.proxyURL)
	postHooks(t, c, hookRequests(a, 0, 4))
	postHooks(t, c, hookRequests(b, 100, 2))
	// A hook refused (a coding hookproxy cannot read) is counted.
	req, err := http.NewRequest(http.MethodPost, a, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "br")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("hook in br: %d, want 415", resp.StatusCode)
	}
	waitLogs(t, hp.logs, "batch given up", 3)
	cli := func(code int, args ...string) (string, string) {
		t.Helper()
		return cliBinary(t, adminURL, token, code, args...)
	}

	out, _ := cli(0, "dead", "list", "--json")
	all := decode[admin.DeadLetterList](t, out)
	if all.Total != 3 {
		t.Fatalf("dead list: %d dead letters, want 3\n%s", all.Total, out)
	}
	text, _ := cli(0, "dead", "list")
	for _, d := range all.DeadLetters {
		if !strings.Contains(text, d.ID) || d.Reason != "status" || d.LastStatus != 400 || d.HookCount != 2 || len(d.HookIDs) != 2 {
			t.Errorf("dead letter %+v (in the table: %t)", d, strings.Contains(text, d.ID))
		}
	}
	out, _ = cli(0, "dead", "list", "--target", a, "--json")
	if !strings.Contains(out, `"target": "`+a+`"`) {
		t.Errorf("dead list --json does not show the target %s as it is:\n%s", a, out)
	}
	ofA := decode[admin.DeadLetterList](t, out)
	if ofA.Total != 2 {
		t.Fatalf("dead list --target a: %d, want 2", ofA.Total)
	}
	// Pasted with white space around it, as from a terminal.
	out, _ = cli(0, "dead", "list", "--target", " "+a+"\n", "--json")
	if n := decode[admin.DeadLetterList](t, out).Total; n != 2 {
		t.Fatalf("dead list --target ' a\\n': %d, want 2", n)
	}
	var ofB string
	for _, d := range all.DeadLetters {
		if d.Target == b {
			ofB = d.ID
		}
	}

	show, _ := cli(0, "dead", "show", ofA.DeadLetters[0].ID)
	for _, want := range []string{"reason:    status: HTTP 400 Bad Request", `"pk":0}`, `"pk":1}`, "target:    " + a} {
		if !strings.Contains(show, want) {
			t.Errorf("dead show lacks %q:\n%s", want, show)
		}
	}

	broken.Store(false)
	before := len(rc.requests())
	out, _ = cli(0, "dead", "replay", "--target", a)
	if want := "replayed 2 dead letters (4 hooks): back in their targets' queues\n"; out != want {
		t.Errorf("dead replay = %q, want %q", out, want)
	}
	got := rc.waitHooks(t, 6+4) // 6 refused, then the 4 replayed
	if p := allPKs(t, got[before:]); !slices.Equal(p, seq(0, 4)) {
		t.Errorf("replayed hooks arrived as %v, want 0..3 in order", p)
	}

	out, _ = cli(0, "dead", "purge", ofB)
	if out != "purged 1 dead letter\n" {
		t.Errorf("dead purge = %q", out)
	}
	out, _ = cli(0, "dead", "list", "--json")
	if left := decode[admin.DeadLetterList](t, out); left.Total != 0 {
		t.Errorf("%d dead letters left after replay and purge", left.Total)
	}
	out, _ = cli(0, "retry-failed", "--json")
	if res := decode[admin.ReplayResult](t, out); res.DeadLetters != 0 || res.Hooks != 0 {
		t.Errorf("retry-failed with nothing dead = %+v", res)
	}

	// Exit codes and messages for scripts.
	if _, e := cli(3, "dead", "purge", "NOSUCH"); !strings.Contains(e, "NOSUCH") {
		t.Errorf("purge of an unknown id: stderr %q", e)
	}
	cli(3, "dead", "show", "NOSUCH")
	if _, e := cli(2, "dead", "replay"); !strings.Contains(e, "select dead letters") {
		t.Errorf("replay without a selector: stderr %q", e)
	}
	cli(2, "dead", "frobnicate")
	if _, e := cliBinary(t, adminURL, "wrong", 1, "status"); !strings.Contains(e, "token") {
		t.Errorf("wrong token: stderr %q", e)
	}

	// The listener itself: /healthz is open, the rest wants the token.
	var body map[string]any
	if code := admintest.Call(t, "GET", adminURL+"/healthz", "", nil, &body); code != http.StatusOK {
		t.Errorf("/healthz without token: %d", code)
	}
	if code := admintest.Call(t, "GET", adminURL+"/api/status", "", nil, &body); code != http.StatusUnauthorized {
		t.Errorf("/api/status without token: %d, want 401", code)
	}
	fams := admintest.Scrape(t, adminURL, token)
	for _, reason := range proxy.RefusalReasons {
		want := 0.0
		if reason == proxy.RefusedEncoding {
			want = 1
		}
		if n, _ := admintest.Series(t, fams, "hookproxy_hooks_refused_total", "reason="+reason); n != want {
			t.Errorf("hookproxy_hooks_refused_total{reason=%q} = %v, want %v", reason, n, want)
		}
	}
	if n, _ := admintest.Series(t, fams, "hookproxy_hooks_captured_total"); n != 6 {
		t.Errorf("hookproxy_hooks_captured_total = %v, want 6", n)
	}
}

// TestCLIErrors: usage errors, an unreachable admin API and a version,
// in-process.
func TestCLIErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dead"}, exitUsage, "want list, show, replay or purge"},
		{[]string{"dead", "show"}, exitUsage, "one dead letter id"},
		{[]string{"dead", "replay", "--all", "X"}, exitUsage, "not several"},
		{[]string{"dead", "purge", "--limit", "3"}, exitUsage, "flag provided but not defined"},
		{[]string{"status", "extra"}, exitUsage, "no arguments"},
		{[]string{"status", "--limit", "0"}, exitUsage, "--limit 0: want 1 or more"},
		{[]string{"dead", "list", "--limit", "-5"}, exitUsage, "--limit -5: want 1 or more"},
		{[]string{"dead", "list", "--offset", "-3"}, exitUsage, "--offset -3: want 0 or more"},
		{[]string{"dead-list"}, exitUsage, `unknown command "dead-list"`},
		{[]string{"status", "--admin-url", "ftp://x"}, exitUsage, "want http://host:port"},
		{[]string{"status", "--admin-url", "http://127.0.0.1:1", "--timeout", "5s"}, exitFailure, "is hookproxy running?"},
		{[]string{"status", "--admin-url", "http://op:s3cretpw@127.0.0.1:1", "--timeout", "5s"}, exitFailure, "admin API at http://op:xxxxx@127.0.0.1:1"},
		// Refused before any request: a scheme mistyped, a port that is
		// no number, no scheme at all.
		{[]string{"status", "--admin-url", "htp://op:s3cretpw@127.0.0.1:1"}, exitUsage, `admin url "htp://op:xxxxx@127.0.0.1:1"`},
		{[]string{"status", "--admin-url", "http://op:s3cretpw@127.0.0.1:9o90/"}, exitUsage, `admin url "http://op:xxxxx@127.0.0.1:9o90/"`},
		{[]string{"status", "--admin-url", "op:s3cretpw@127.0.0.1:9090"}, exitUsage, `admin url "op:xxxxx@127.0.0.1:9090"`},
	} {
		_, _, err := cliRun(t, "", tt.args...)
		if err != nil && strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("hookproxy %v: the error shows the password: %v", tt.args, err)
		}
		if exitCode(err) != tt.code || err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("hookproxy %v: %v (exit %d), want exit %d and %q", tt.args, err, exitCode(err), tt.code, tt.msg)
		}
	}
	out, _, err := cliRun(t, "", "version", "--json")
	if v := decode[map[string]string](t, out); err != nil || v["version"] != versionString() {
		t.Errorf("version --json = %q, %v", out, err)
	}
	if out, _, err := cliRun(t, "", "status", "-h"); err != nil || !strings.Contains(out, "exit codes") {
		t.Errorf("status -h = %q, %v", out, err)
	}
	if got := listenURL(":9090"); got != "http://127.0.0.1:9090" {
		t.Errorf("listenURL(:9090) = %s", got)
	}
}

// TestHealthCommand: the container health check and exec probe. Liveness
// needs no token; readiness sends the token from the environment.
func TestHealthCommand(t *testing.T) {
	const token = "probe-token"
	hp := startHookproxy(t, map[string]string{"ADMIN_TOKEN": token})
	adminURL := "http://" + hp.logs.field("admin listening", "admin_addr")
	if out, _, err := cliRun(t, adminURL, "health"); err != nil || strings.TrimSpace(out) != "alive" {
		t.Fatalf("health = %q, %v; want alive", out, err)
	}
	if out, _, err := cliRun(t, adminURL, "health", "--json"); err != nil || !decode[map[string]bool](t, out)["alive"] {
		t.Fatalf("health --json = %q, %v; want {\"alive\": true}", out, err)
	}
	// A value the API refuses is wrong usage too.
	if _, _, err := cliRun(t, adminURL, "status", "--sort", "bogus", "--token", token); exitCode(err) != exitUsage ||
		!strings.Contains(err.Error(), "sort") {
		t.Fatalf("status --sort bogus: %v (exit %d), want exit 2 naming sort", err, exitCode(err))
	}
	if _, _, err := cliRun(t, adminURL, "health", "--ready"); exitCode(err) != exitFailure {
		t.Fatalf("health --ready without the token: %v (exit %d), want exit 1", err, exitCode(err))
	}
	if out, _, err := cliRun(t, adminURL, "health", "--ready", "--token", token); err != nil || strings.TrimSpace(out) != "ready" {
		t.Fatalf("health --ready = %q, %v; want ready", out, err)
	}
	// A token read from a file ends with a newline.
	if out, _, err := cliRun(t, adminURL, "health", "--ready", "--token", token+"\n"); err != nil || strings.TrimSpace(out) != "ready" {
		t.Fatalf("health --ready with the token and a newline = %q, %v; want ready", out, err)
	}
	hp.stop(t)
	if _, _, err := cliRun(t, adminURL, "health", "--timeout", "5s"); exitCode(err) != exitFailure {
		t.Fatalf("health of a stopped hookproxy: %v (exit %d), want exit 1", err, exitCode(err))
	}
}

// TestExitCodesOfOtherServers: an admin URL that is not hookproxy's
// admin API (another server, or the proxy port) fails with exit 1, not
// with the codes of a refused value (2) or a missing dead letter (3).
func TestExitCodesOfOtherServers(t *testing.T) {
	notHookproxy := httptest.NewServer(http.NotFoundHandler())
	defer notHookproxy.Close()
	if _, _, err := cliRun(t, notHookproxy.URL, "health", "--timeout", "5s"); exitCode(err) != exitFailure {
		t.Errorf("health against a server that is not hookproxy (404): %v, exit %d; want exit 1", err, exitCode(err))
	}
	if _, _, err := cliRun(t, notHookproxy.URL, "status", "--timeout", "5s"); exitCode(err) != exitFailure {
		t.Errorf("status against a server that is not hookproxy (404): %v, exit %d; want exit 1", err, exitCode(err))
	}
	// A common slip: the admin URL pointed at the proxy port.
	hp := startHookproxy(t, nil)
	if _, _, err := cliRun(t, hp.proxyURL, "health", "--timeout", "5s"); exitCode(err) != exitFailure {
		t.Errorf("health against the proxy port (400): %v, exit %d; want exit 1", err, exitCode(err))
	}
}

// TestCommandsRefuseOtherServers: a server that answers 2xx JSON, even
// in the shapes the admin API uses, is not hookproxy's admin API when its
// answers lack the admin API's mark: every command fails with exit 1 and
// says so, and prints no result ("alive", "no dead letters", "replayed
// 0", ...).
func TestCommandsRefuseOtherServers(t *testing.T) {
	commands := [][]string{
		{"health"},
		{"health", "--ready"},
		{"status"},
		{"dead", "list"},
		{"dead", "show", "01JBX"},
		{"dead", "replay", "--all"},
		{"dead", "purge", "--all"},
		{"retry-failed"},
	}
	for _, srv := range []struct{ name, body string }{
		{"200 {}", `{}`},
		{"200 with the admin API's shapes", ""},
	} {
		url := admintest.Impostor(t, http.StatusOK, srv.body)
		for _, args := range commands {
			out, _, err := cliRun(t, url, append(args, "--timeout", "5s")...)
			if exitCode(err) != exitFailure || !strings.Contains(fmt.Sprint(err), "not hookproxy's admin API") || out != "" {
				t.Errorf("%s against a server answering %s: %v (exit %d), output %q; want exit 1, not hookproxy's admin API, no output",
					strings.Join(args, " "), srv.name, err, exitCode(err), out)
			}
		}
	}
}

// TestServeArguments: serve takes no arguments (exit 2), and -h prints
// the usage.
func TestServeArguments(t *testing.T) {
	environ := []string{"HOOKPROXY_DATA_DIR=" + t.TempDir()}
	if err := run(t.Context(), []string{"serve", "--bogus"}, environ, io.Discard, io.Discard); exitCode(err) != exitUsage {
		t.Errorf("serve --bogus: %v, exit %d; want exit %d", err, exitCode(err), exitUsage)
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"serve", "-h"}, environ, &out, io.Discard); err != nil || !strings.Contains(out.String(), "usage") {
		t.Errorf("serve -h: %v, output %q; want the usage and exit 0", err, out.String())
	}
}

// TestTimeoutIsChecked: --timeout must be positive.
func TestTimeoutIsChecked(t *testing.T) {
	hp := startHookproxy(t, nil)
	adminURL := "http://" + hp.logs.field("admin listening", "admin_addr")
	for _, d := range []string{"0s", "-5s"} {
		_, _, err := cliRun(t, adminURL, "health", "--timeout", d)
		if exitCode(err) != exitUsage {
			t.Errorf("health --timeout %s: %v, exit %d; want a usage error (exit 2)", d, err, exitCode(err))
		}
	}
}

// TestFlagNumbersAreDecimal: --target-id, --limit and --offset are read
// in decimal, as the settings are. flag's own integer flags read 010 as
// octal 8: "dead purge --target-id 010" purged target 8's dead letters.
// --timeout takes the forms of the duration settings, no more.
func TestFlagNumbersAreDecimal(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		http.Error(w, "not the admin API", http.StatusTeapot)
	}))
	defer srv.Close()
	request := func(args ...string) string {
		t.Helper()
		mu.Lock()
		got = nil
		mu.Unlock()
		_, _, err := cliRun(t, srv.URL, args...)
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 {
			t.Fatalf("hookproxy %s: %v; made requests %q, want one", strings.Join(args, " "), err, got)
		}
		return got[0]
	}
	if got, want := request("dead", "list", "--target-id", "010", "--limit", "010", "--offset", "010"),
		"GET /api/dead-letters?limit=10&offset=10&target_id=10"; got != want {
		t.Errorf("dead list --target-id 010 --limit 010 --offset 010 asked %q, want %q", got, want)
	}
	if got, want := request("dead", "purge", "--target-id", "010"), "DELETE /api/dead-letters?target_id=10"; got != want {
		t.Errorf("dead purge --target-id 010 asked %q, want %q", got, want)
	}
	mu.Lock()
	got = nil
	mu.Unlock()
	for _, args := range [][]string{
		{"dead", "list", "--target-id", "0x10"}, {"dead", "purge", "--target-id", "0o12"},
		{"dead", "list", "--limit", "1_0"}, {"dead", "list", "--offset", "0b1"}, {"status", "--limit", "0x10"},
		{"dead", "replay", "--target-id", "99999999999999999999"},
		{"health", "--timeout", "1_000"}, {"health", "--timeout", "0x1p4"}, {"health", "--timeout", "1e3"},
	} {
		_, _, err := cliRun(t, srv.URL, args...)
		if exitCode(err) != exitUsage {
			t.Errorf("hookproxy %s: %v, exit %d; want a usage error (exit 2)", strings.Join(args, " "), err, exitCode(err))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 0 {
		t.Errorf("a command with a bad number asked %q; want nothing asked", got)
	}
}

// TestTimeoutTakesSeconds: --timeout is written as the duration settings
// are, a Go duration or a plain number of seconds.
func TestTimeoutTakesSeconds(t *testing.T) {
	hp := startHookproxy(t, nil)
	adminURL := "http://" + hp.logs.field("admin listening", "admin_addr")
	for _, d := range []string{"5", "1.5", "5s"} {
		if _, stderr, err := cliRun(t, adminURL, "health", "--timeout", d); err != nil {
			t.Errorf("health --timeout %s: %v, exit %d (%s); want exit 0", d, err, exitCode(err), stderr)
		}
	}
	_, _, err := cliRun(t, adminURL, "health", "--timeout", "5sec")
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "neither a duration") {
		t.Errorf("health --timeout 5sec: %v, exit %d; want a usage error naming the accepted forms", err, exitCode(err))
	}
}

// oneDeadLetter opens a store that holds one dead letter, a batch of one
// hook to http://a.test/h that got a 400, and returns the store, the
// dead letter's id and its target's id.
func oneDeadLetter(tb testing.TB) (store *buffer.Store, id string, target buffer.TargetID) {
	tb.Helper()
	store, err := buffer.Open(buffer.Options{Dir: tb.TempDir(), GCInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	if err := store.Put(context.Background(), &buffer.Hook{Target: "http://a.test/h", Method: "POST", Body: []byte(`{"pk":1}`)}); err != nil {
		tb.Fatal(err)
	}
	sts, err := store.Targets()
	if err != nil || len(sts) != 1 {
		tb.Fatalf("targets %+v, %v", sts, err)
	}
	b, err := store.Claim(sts[0].ID, 1, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := store.GiveUp(sts[0].ID, b.ID, "status", buffer.Failure{Status: 400, Error: "HTTP 400 Bad Request"}, buffer.NextClaim{}); err != nil {
		tb.Fatal(err)
	}
	return store, b.ID, sts[0].ID
}

// serveAdmin serves the admin API on store from a loopback server and
// returns its URL.
func serveAdmin(tb testing.TB, store admin.Store) string {
	tb.Helper()
	adm, err := admin.New(admin.Options{Store: store, Version: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(adm)
	tb.Cleanup(srv.Close)
	return srv.URL
}

// deadLetterCount is how many dead letters the admin API at adminURL
// holds.
func deadLetterCount(tb testing.TB, adminURL string) int {
	tb.Helper()
	out, _, err := cliRun(tb, adminURL, "dead", "list", "--json")
	if err != nil {
		tb.Fatalf("dead list: %v", err)
	}
	return decode[admin.DeadLetterList](tb, out).Total
}

// fullWriter fails every write, as standard output on a full disk
// (/dev/full) does.
type fullWriter struct{}

func (fullWriter) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

// TestOutputWriteErrorsFail: a command whose output cannot be written
// (hookproxy dead list > file on a full disk) has failed: exit 1 with
// the write error, in text as with --json.
func TestOutputWriteErrorsFail(t *testing.T) {
	store, id, _ := oneDeadLetter(t)
	environ := []string{"HOOKPROXY_ADMIN_URL=" + serveAdmin(t, store)}
	for _, args := range [][]string{
		{"version"}, {"version", "--json"}, {"--version"}, {"help"}, {"status", "-h"},
		{"status"}, {"status", "--json"}, {"health"}, {"health", "--json"},
		{"dead", "list"}, {"dead", "list", "--json"}, {"dead", "show", id}, {"dead", "show", id, "--json"},
		{"dead", "purge", "--target", "http://no.such.test/"},
		{"dead", "replay", id}, // last: it empties the dead letters
	} {
		err := run(t.Context(), args, environ, fullWriter{}, io.Discard)
		if exitCode(err) != exitFailure || !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("hookproxy %s > /dev/full: %v (exit %d); want exit 1 with the write error", strings.Join(args, " "), err, exitCode(err))
		}
	}
}

// TestHelpOfEveryCommand: "hookproxy <command> -h" (or --help) prints
// the usage on standard output and exits 0, for every command.
func TestHelpOfEveryCommand(t *testing.T) {
	for _, cmd := range [][]string{
		{}, {"serve"}, {"status"}, {"dead"}, {"dead", "list"}, {"dead", "show"}, {"dead", "replay"}, {"dead", "purge"},
		{"retry-failed"}, {"health"}, {"version"}, {"ca"},
	} {
		for _, h := range []string{"-h", "--help"} {
			var out, errb bytes.Buffer
			args := append(slices.Clone(cmd), h)
			err := run(t.Context(), args, []string{"HOOKPROXY_DATA_DIR=" + t.TempDir()}, &out, &errb)
			if err != nil || !strings.Contains(out.String(), "usage:") {
				t.Errorf("hookproxy %s: %v (exit %d), stdout %q; want the usage on stdout and exit 0", strings.Join(args, " "), err, exitCode(err), out.String())
			}
		}
	}
	if out, _, err := cliRun(t, "", "dead", "help"); err != nil || !strings.Contains(out, "dead list") {
		t.Errorf("hookproxy dead help: %v, stdout %q; want the usage", err, out)
	}
}

// dispatched is every command the dispatcher accepts, read from its
// source: the string literals run and runCLI compare cmd with, and, as
// "dead list", those runCLI compares dead's subcommand sub with.
func dispatched(tb testing.TB) (cmds []string) {
	tb.Helper()
	fset := token.NewFileSet()
	for _, file := range []string{"run.go", "cli.go"} {
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			tb.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || (fn.Name.Name != "run" && fn.Name.Name != "runCLI") {
				continue
			}
			literal := func(x ast.Expr, ident string) {
				if lit, ok := x.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					if ident == "sub" {
						v = "dead " + v
					}
					cmds = append(cmds, v)
				}
			}
			isIdent := func(x ast.Expr) string {
				if id, ok := x.(*ast.Ident); ok && (id.Name == "cmd" || id.Name == "sub") {
					return id.Name
				}
				return ""
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.SwitchStmt: // switch cmd { case "status", "dead": }
					if id := isIdent(n.Tag); id != "" {
						for _, c := range n.Body.List {
							for _, x := range c.(*ast.CaseClause).List {
								literal(x, id)
							}
						}
					}
				case *ast.BinaryExpr: // cmd == "serve"
					if n.Op != token.EQL {
						break
					}
					if id := isIdent(n.X); id != "" {
						literal(n.Y, id)
					} else if id := isIdent(n.Y); id != "" {
						literal(n.X, id)
					}
				}
				return true
			})
		}
	}
	slices.Sort(cmds)
	cmds = slices.Compact(cmds)
	for _, want := range []string{"serve", "status", "ca", "dead list"} {
		if !slices.Contains(cmds, want) {
			tb.Fatalf("found commands %q in the dispatcher, not %q: has its shape changed? update dispatched", cmds, want)
		}
	}
	return cmds
}

// TestUsageListsEveryCommand: both usage texts (hookproxy help or an
// unknown command, and an operator command's -h or wrong usage) list
// every command the dispatcher accepts, each at the start of a line of
// the list; dead's subcommands and --version are named in the operator
// usage. Read from the dispatcher, the list cannot drift: the operator
// usage once left out ca and serve.
func TestUsageListsEveryCommand(t *testing.T) {
	for _, cmd := range dispatched(t) {
		texts := map[string]string{"usage (run.go)": usage, "cliUsage (cli.go)": cliUsage}
		var listed *regexp.Regexp
		switch {
		case strings.HasPrefix(cmd, "-"): // --version
			listed = regexp.MustCompile(regexp.QuoteMeta("hookproxy " + cmd))
		case strings.HasPrefix(cmd, "dead "):
			delete(texts, "usage (run.go)") // it lists dead alone
			listed = regexp.MustCompile(`\b` + regexp.QuoteMeta(cmd) + `\b`)
		default:
			listed = regexp.MustCompile(`(?m)^ +` + regexp.QuoteMeta(cmd) + `\b`)
		}
		for name, text := range texts {
			if !listed.MatchString(text) {
				t.Errorf("%s does not list %q, which hookproxy accepts", name, cmd)
			}
		}
	}
}

// TestEmptySelectorsAreUsageErrors: an empty dead letter id, an empty
// --target and --target-id 0 name nothing: exit 2, before anything is
// done. Without the check, "dead show ”" asked for the route
// /api/dead-letters/ and said "not found" (exit 3), and --target-id 0
// was taken as no filter: "dead list" listed every dead letter and
// "retry-failed --target-id 0" replayed them all.
func TestEmptySelectorsAreUsageErrors(t *testing.T) {
	store, _, _ := oneDeadLetter(t)
	adminURL := serveAdmin(t, store)
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"dead", "show", ""}, "empty dead letter id"},
		{[]string{"dead", "show", " "}, "empty dead letter id"},
		{[]string{"dead", "replay", ""}, "empty dead letter id"},
		{[]string{"dead", "purge", " \t"}, "empty dead letter id"},
		{[]string{"dead", "list", "--target-id", "0"}, "--target-id 0"},
		{[]string{"dead", "list", "--target", ""}, "--target wants a target URL"},
		{[]string{"dead", "replay", "--target-id", "0"}, "--target-id 0"},
		{[]string{"dead", "purge", "--all", "--target-id", "0"}, "--target-id 0"},
		{[]string{"retry-failed", "--target-id", "0"}, "--target-id 0"},
		{[]string{"retry-failed", "--target", " "}, "--target wants a target URL"},
	} {
		out, _, err := cliRun(t, adminURL, append(tt.args, "--json")...)
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("hookproxy %q: %v (exit %d), stdout %q; want exit 2 and %q", tt.args, err, exitCode(err), out, tt.msg)
		}
	}
	if n := deadLetterCount(t, adminURL); n != 1 {
		t.Errorf("%d dead letters left, want the 1 untouched", n)
	}
}

// purgeBeforeReplay is a store where another operator purges the
// selected dead letters between the admin API's selection and the
// replay.
type purgeBeforeReplay struct{ *buffer.Store }

func (p purgeBeforeReplay) ReplayDeadLetters(f buffer.DeadLetterFilter) ([]string, int, error) {
	if _, err := p.Store.PurgeDeadLetters(f); err != nil {
		return nil, 0, err
	}
	return p.Store.ReplayDeadLetters(f)
}

// TestSelectionNeverExitsNotFound: exit 3 is for dead letters the
// operator named by id. Dead letters selected by --all, --target or
// --target-id that someone else purged before the replay got to them
// are not an error (exit 0, nothing replayed); the same race on a
// dead letter named by its id is exit 3.
func TestSelectionNeverExitsNotFound(t *testing.T) {
	for _, sel := range []func(id string, target buffer.TargetID) []string{
		func(string, buffer.TargetID) []string {
			return []string{"dead", "replay", "--target", "http://a.test/h"}
		},
		func(_ string, target buffer.TargetID) []string {
			return []string{"dead", "replay", "--target-id", strconv.FormatUint(uint64(target), 10)}
		},
		func(string, buffer.TargetID) []string {
			return []string{"dead", "replay", "--all", "--reason", "status"}
		},
		func(string, buffer.TargetID) []string { return []string{"retry-failed"} },
	} {
		store, id, target := oneDeadLetter(t)
		args := sel(id, target)
		out, _, err := cliRun(t, serveAdmin(t, purgeBeforeReplay{store}), args...)
		if err != nil || out != "replayed 0 dead letters (0 hooks): back in their targets' queues\n" {
			t.Errorf("hookproxy %s, its dead letters purged meanwhile: %q, %v (exit %d); want 0 replayed and exit 0",
				strings.Join(args, " "), out, err, exitCode(err))
		}
	}
	store, id, _ := oneDeadLetter(t)
	if _, _, err := cliRun(t, serveAdmin(t, purgeBeforeReplay{store}), "dead", "replay", id); exitCode(err) != exitNotFound ||
		!strings.Contains(err.Error(), id) {
		t.Errorf("hookproxy dead replay %s, purged meanwhile: %v (exit %d); want exit 3 naming it", id, err, exitCode(err))
	}
}

// TestMissingRouteIsNotNotFound: exit 3 says that a dead letter named by
// its id is not there. An admin URL that reaches hookproxy's admin API
// under a wrong path (HOOKPROXY_ADMIN_URL=http://host:9090/api, say)
// gets 404 "no such route" for every request: the command failed (exit
// 1), it did not find that the dead letter is gone. A script that takes
// exit 3 as "already purged" or "replayed by someone else" would go on.
func TestMissingRouteIsNotNotFound(t *testing.T) {
	store, id, _ := oneDeadLetter(t)
	wrong := serveAdmin(t, store) + "/api"
	for _, args := range [][]string{
		{"dead", "show", id},
		{"dead", "purge", id},
		{"dead", "replay", id},
	} {
		_, _, err := cliRun(t, wrong, args...)
		if code := exitCode(err); code != exitFailure || err == nil || !strings.Contains(err.Error(), "no such route") {
			t.Errorf("hookproxy %s at %s: %v (exit %d); want exit 1 (no such route), not 3 (not found)",
				strings.Join(args, " "), wrong, err, code)
		}
	}
	if n := deadLetterCount(t, strings.TrimSuffix(wrong, "/api")); n != 1 {
		t.Errorf("%d dead letters after the failed commands, want 1", n)
	}
}

// TestStatusCountsInWords: one hook of one target is "1 hook, ...,
// 1 target", not "1 hooks".
func TestStatusCountsInWords(t *testing.T) {
	var out strings.Builder
	writeStatus(&out, admin.Status{Version: "v1", Ready: true, PendingHooks: 1, PendingBytes: 8, PendingTargets: 1}, admin.TargetList{})
	if got := out.String(); !strings.Contains(got, "pending:      1 hook, 8 B, 1 target") {
		t.Errorf("status:\n%s\nwant the line pending:      1 hook, 8 B, 1 target", got)
	}
}

// slowReplay is a store whose replays wait for release, as a replay of
// tens of thousands of dead letters (one synced write each) takes
// minutes; done is closed once the replay is made.
type slowReplay struct {
	*buffer.Store
	release, done chan struct{}
}

func (s slowReplay) ReplayDeadLetters(f buffer.DeadLetterFilter) ([]string, int, error) {
	defer close(s.done)
	<-s.release
	return s.Store.ReplayDeadLetters(f)
}

// TestReplayOutlastingTheTimeout: a replay that outlasts --timeout is
// not stopped by the command giving up: hookproxy makes it all the same.
// The error says so, and how to wait for it, instead of asking whether
// hookproxy is running (it is, and it is replaying): an operator told
// the replay failed would run it again, or look for a fault that is
// not there.
func TestReplayOutlastingTheTimeout(t *testing.T) {
	store, _, _ := oneDeadLetter(t)
	slow := slowReplay{Store: store, release: make(chan struct{}), done: make(chan struct{})}
	adminURL := serveAdmin(t, slow)
	letGo := sync.OnceFunc(func() { close(slow.release) })
	t.Cleanup(letGo) // before the server's Close, which waits for the replay
	_, _, err := cliRun(t, adminURL, "retry-failed", "--timeout", "100ms")
	if exitCode(err) != exitFailure || err == nil || strings.Contains(err.Error(), "is hookproxy running") ||
		!strings.Contains(err.Error(), "goes on with the replay") || !strings.Contains(err.Error(), "--timeout") {
		t.Errorf("retry-failed past --timeout: %v (exit %d); want exit 1 saying hookproxy goes on with the replay, and --timeout", err, exitCode(err))
	}
	letGo()
	select {
	case <-slow.done:
	case <-time.After(waitLimit):
		t.Fatal("the replay did not finish")
	}
	if n := deadLetterCount(t, adminURL); n != 0 {
		t.Errorf("%d dead letters after the replay the command stopped waiting for, want 0: it was made", n)
	}
}

// hostileCertError is the error a TLS client gets from a receiver whose
// certificate names hold escape sequences (set the window title, write
// the clipboard, clear the screen): the detail a sender keeps for an
// attempt at https://receiver.invalid/ served by it.
func hostileCertError(tb testing.TB) string {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"\x1b]2;owned\a\x1b]52;c;cm0gLXJmIH4K\a\x1b[2J"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{ServerName: "receiver.invalid"})
	if err == nil {
		conn.Close()
		tb.Fatal("a handshake with a certificate for other names passed")
	}
	return err.Error()
}

// TestOutputCannotDriveTheTerminal: what the text commands print of a
// dead letter and a target (the detail of a receiver's TLS failure, a
// hook's body, a target's last error) shows its control characters as
// escapes; written raw, a receiver's certificate would set the
// operator's clipboard and clear the screen. --json keeps the values
// whole.
func TestOutputCannotDriveTheTerminal(t *testing.T) {
	detail := hostileCertError(t)
	if !strings.Contains(detail, "\x1b]52;") {
		t.Fatalf("the handshake error %q does not name the certificate's names", detail)
	}
	store, err := buffer.Open(buffer.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	claim := func(target, body string) (buffer.TargetID, *buffer.Batch) {
		t.Helper()
		if err := store.Put(context.Background(), &buffer.Hook{Target: target, Method: "POST", Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
		sts, err := store.Targets()
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sts {
			if st.URL == target {
				b, err := store.Claim(st.ID, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				return st.ID, b
			}
		}
		t.Fatalf("no target %s", target)
		return 0, nil
	}
	const body = "pk=1\n\tname=\x1b[8mhidden"
	dead, b := claim("https://receiver.invalid/dead", body)
	if _, err := store.GiveUp(dead, b.ID, "retries-exhausted", buffer.Failure{At: time.Now(), Error: detail}, buffer.NextClaim{}); err != nil {
		t.Fatal(err)
	}
	retried, b := claim("https://receiver.invalid/retried", `{"pk":2}`)
	if err := store.RecordAttempt(retried, b.ID, buffer.Failure{At: time.Now(), Error: "\x1b[2J" + detail, Next: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	adminURL := serveAdmin(t, store)

	out, _, err := cliRun(t, adminURL, "dead", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	list := decode[admin.DeadLetterList](t, out)
	if list.Total != 1 || list.DeadLetters[0].Detail != detail {
		t.Fatalf("dead list --json: %+v, want the one dead letter with its detail whole", list)
	}
	id := list.DeadLetters[0].ID
	for _, args := range [][]string{{"status"}, {"dead", "list"}, {"dead", "show", id}} {
		out, _, err := cliRun(t, adminURL, args...)
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(args, " "), err)
		}
		if i := strings.IndexFunc(out, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }); i >= 0 {
			t.Errorf("%s writes a control character to the terminal at %d:\n%q", strings.Join(args, " "), i, out)
		}
	}
	out, _, err = cliRun(t, adminURL, "dead", "show", id)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`valid for \x1b]2;owned\a\x1b]52;c;cm0gLXJmIH4K\a\x1b[2J, not receiver.invalid`, "pk=1\n\tname=\\x1b[8mhidden\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("dead show:\n%s\nwant it to show %q", out, want)
		}
	}
}
