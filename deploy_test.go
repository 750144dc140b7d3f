package main

// Tests of what ships hookproxy: the Dockerfile, docker-compose.yml,
// deploy/k8s and the examples. No container engine runs here, so the files
// are checked against the code statically (the compose file with the
// Compose specification's own loader), the Dockerfile's build command is
// run as written, and the example app and receiver run without containers
// on the environment the compose file gives them.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// checkSettings checks that every HOOKPROXY_ variable of env is one
// hookproxy reads and that hookproxy accepts their values, and returns the
// configuration they make.
func checkSettings(tb testing.TB, where string, env map[string]string) Config {
	tb.Helper()
	known := knownSettings()
	var environ []string
	for k, v := range env {
		if !strings.HasPrefix(k, envPrefix) {
			continue
		}
		if !known[k] {
			tb.Errorf("%s: %s is not a variable hookproxy reads", where, k)
		}
		environ = append(environ, k+"="+v)
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		tb.Fatalf("%s: hookproxy refuses this configuration: %v", where, err)
	}
	return cfg
}

// portOf is the port of a listen address such as ":8080".
func portOf(tb testing.TB, addr string) string {
	tb.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("address %q: %v", addr, err)
	}
	return port
}

// shutdownBound is how long hookproxy may take to stop before its drain
// starts: the proxy's shutdown waits up to 10s for captures in progress
// (run.go). A grace period must cover it plus HOOKPROXY_DRAIN_TIMEOUT.
const shutdownBound = 10 * time.Second

// --- docker-compose.yml ---------------------------------------------------

// loadCompose loads docker-compose.yml with the Compose specification's
// loader, with an empty environment: every ${VAR:-default} takes its
// default, as on a machine that sets nothing.
func loadCompose(tb testing.TB) *types.Project {
	tb.Helper()
	opts, err := composecli.NewProjectOptions([]string{"docker-compose.yml"}, composecli.WithWorkingDirectory("."), composecli.WithEnv(nil))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	if err != nil {
		tb.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

func composeService(tb testing.TB, p *types.Project, name string) types.ServiceConfig {
	tb.Helper()
	s, ok := p.Services[name]
	if !ok {
		tb.Fatalf("docker-compose.yml has no service %q (has %v)", name, slices.Sorted(func(yield func(string) bool) {
			for n := range p.Services {
				if !yield(n) {
					return
				}
			}
		}))
	}
	return s
}

// composeEnv is a service's environment; every variable must have a value.
func composeEnv(tb testing.TB, s types.ServiceConfig) map[string]string {
	tb.Helper()
	env := map[string]string{}
	for k, v := range s.Environment {
		if v == nil {
			tb.Fatalf("service %s: %s has no value", s.Name, k)
		}
		env[k] = *v
	}
	return env
}

// composeMount finds the volume mount of s that holds path, and returns
// it with path relative to the mount's target.
func composeMount(s types.ServiceConfig, p string) (types.ServiceVolumeConfig, string, bool) {
	var best types.ServiceVolumeConfig
	rel, found := "", false
	for _, v := range s.Volumes {
		r, err := filepath.Rel(v.Target, p)
		if err != nil || r == ".." || strings.HasPrefix(r, "../") {
			continue
		}
		if !found || len(v.Target) > len(best.Target) {
			best, rel, found = v, r, true
		}
	}
	return best, rel, found
}

// TestComposeFile checks docker-compose.yml against hookproxy and against
// what the demo needs: the services, hookproxy configured through known
// variables only, the app's proxy and CA variables, the health-gated
// start, the volumes.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	hp, app, rcv := composeService(t, p, "hookproxy"), composeService(t, p, "app"), composeService(t, p, "receiver")

	// hookproxy: this repository's image, env only.
	if hp.Build == nil || filepath.Clean(hp.Build.Context) != mustAbs(t, ".") || hp.Build.Dockerfile != "Dockerfile" {
		t.Errorf("hookproxy is not built from this repository's Dockerfile: %+v", hp.Build)
	}
	if len(hp.Command) > 0 || len(hp.Entrypoint) > 0 {
		t.Errorf("hookproxy overrides the image's command (%v %v): configure it with environment variables", hp.Entrypoint, hp.Command)
	}
	hpEnv := composeEnv(t, hp)
	for k := range hpEnv {
		if !strings.HasPrefix(k, envPrefix) {
			t.Errorf("hookproxy: %s is set; configure hookproxy with %s* variables only", k, envPrefix)
		}
	}
	cfg := checkSettings(t, "docker-compose.yml hookproxy", hpEnv)
	if !cfg.batching() {
		t.Error("hookproxy: batching is off (set HOOKPROXY_BATCH_SIZE and/or HOOKPROXY_BATCH_TIME)")
	}
	if _, ok := hpEnv["HOOKPROXY_RETRIES"]; !ok {
		t.Error("hookproxy: HOOKPROXY_RETRIES is not set")
	}
	if _, ok := hpEnv["HOOKPROXY_RETRY_INTERVAL"]; !ok {
		t.Error("hookproxy: HOOKPROXY_RETRY_INTERVAL is not set")
	}
	// The receiver is on the compose network: a private address.
	if v := hpEnv["HOOKPROXY_ALLOW_PRIVATE_TARGETS"]; v != "true" {
		t.Errorf("hookproxy: HOOKPROXY_ALLOW_PRIVATE_TARGETS = %q, want true for the demo network", v)
	}
	// The store and the CA bundle are on named volumes.
	for what, file := range map[string]string{"data dir": filepath.Join(cfg.DataDir, "x"), "CA bundle": cfg.caBundleFile()} {
		m, _, ok := composeMount(hp, file)
		if !ok || m.Type != types.VolumeTypeVolume || p.Volumes[m.Source].Name == "" {
			t.Errorf("hookproxy: %s %s is not on a named volume (mount %+v)", what, file, m)
		}
	}
	if hp.StopGracePeriod == nil || time.Duration(*hp.StopGracePeriod) < time.Duration(cfg.DrainTimeout)+shutdownBound {
		t.Errorf("hookproxy: stop_grace_period %v does not cover the drain (%v) plus %v", hp.StopGracePeriod, cfg.DrainTimeout, shutdownBound)
	}
	for _, port := range hp.Ports {
		if port.HostIP != "127.0.0.1" {
			t.Errorf("hookproxy: port %d published on %q: the admin API has no token, publish on 127.0.0.1 only", port.Target, port.HostIP)
		}
	}

	// The app: every hook through hookproxy, its CA trusted, the rest not.
	appEnv := composeEnv(t, app)
	proxyAddr := "hookproxy:" + portOf(t, cfg.Listen)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY"} {
		if u, err := url.Parse(appEnv[k]); err != nil || u.Scheme != "http" || u.Host != proxyAddr {
			t.Errorf("app: %s = %q, want http://%s", k, appEnv[k], proxyAddr)
		}
	}
	noProxy := strings.Split(appEnv["NO_PROXY"], ",")
	adminAddr := "hookproxy:" + portOf(t, cfg.AdminListen)
	db, err := url.Parse(appEnv["DATABASE_URL"])
	if err != nil || db.Hostname() == "" {
		t.Fatalf("app: DATABASE_URL = %q", appEnv["DATABASE_URL"])
	}
	for _, want := range []string{adminAddr, db.Hostname()} {
		if !slices.Contains(noProxy, want) {
			t.Errorf("app: NO_PROXY = %q does not list %s", appEnv["NO_PROXY"], want)
		}
	}
	for target := range strings.SplitSeq(appEnv["DEMO_TARGETS"], ",") {
		u, err := url.Parse(target)
		if err != nil || u.Hostname() == "" {
			t.Fatalf("app: DEMO_TARGETS has %q", target)
		}
		if _, ok := p.Services[u.Hostname()]; !ok {
			t.Errorf("app: DEMO_TARGETS: %s is not a service", target)
		}
		// Compose stops a service before those it depends on: the drain
		// at `docker compose down` needs the receiver still up.
		if _, ok := hp.DependsOn[u.Hostname()]; !ok {
			t.Errorf("hookproxy does not depend on %s: compose would stop it alongside hookproxy, before the drain delivers to it", u.Hostname())
		}
		for _, np := range noProxy {
			if np == u.Hostname() || np == u.Host {
				t.Errorf("app: NO_PROXY lists %s, a subscriber: its hooks would bypass hookproxy", np)
			}
		}
	}
	// REQUESTS_CA_BUNDLE is hookproxy's bundle, through a shared volume.
	hpBundle, hpRel, _ := composeMount(hp, cfg.caBundleFile())
	appBundle, appRel, ok := composeMount(app, appEnv["REQUESTS_CA_BUNDLE"])
	if !ok || appBundle.Source != hpBundle.Source || appRel != hpRel {
		t.Errorf("app: REQUESTS_CA_BUNDLE = %q is not hookproxy's %s (volume %q, %q)", appEnv["REQUESTS_CA_BUNDLE"], cfg.caBundleFile(), hpBundle.Source, hpRel)
	}
	if !appBundle.ReadOnly {
		t.Errorf("app: the CA volume %q is writable; mount it read-only", appBundle.Source)
	}

	// The app starts once hookproxy (and its database) are healthy.
	for _, dep := range []string{"hookproxy", db.Hostname()} {
		if c := app.DependsOn[dep].Condition; c != types.ServiceConditionHealthy {
			t.Errorf("app: depends_on %s with condition %q, want %s", dep, c, types.ServiceConditionHealthy)
		}
		if hc := p.Services[dep].HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 {
			t.Errorf("%s: no health check for the app to wait on", dep)
		}
	}
	// hookproxy's health check runs the binary itself (no curl in the
	// image): the command must exist and pass against a running hookproxy.
	hc := hp.HealthCheck.Test
	entry := dockerEntrypoint(t)
	if len(hc) < 3 || hc[0] != "CMD" || hc[1] != entry[0] {
		t.Fatalf("hookproxy: health check %q, want [CMD %s <command>...]", hc, entry[0])
	}
	checkHealthcheckInProcess(t, hc[2:], hpEnv)

	// The receiver checks the signatures hookproxy makes.
	if rcv.Build == nil || filepath.Clean(rcv.Build.Context) != mustAbs(t, "examples/receiver") {
		t.Errorf("receiver is not built from examples/receiver: %+v", rcv.Build)
	}
	if got, want := composeEnv(t, rcv)["WEBHOOK_SECRET"], hpEnv["HOOKPROXY_SIGNING_SECRET"]; got != want {
		t.Errorf("receiver: WEBHOOK_SECRET %q, hookproxy signs with %q", got, want)
	}
	if app.Build == nil || filepath.Clean(app.Build.Context) != mustAbs(t, "examples/django") {
		t.Errorf("app is not built from examples/django: %+v", app.Build)
	}
}

func mustAbs(tb testing.TB, p string) string {
	tb.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		tb.Fatal(err)
	}
	return abs
}

// checkHealthcheckInProcess runs a health check command through run()
// against a hookproxy started with env (addresses on loopback), and again
// after it stopped: it must pass, then fail. The app waits on it to
// start, so it must also pass while the buffer is nearly full (as it is
// after a receiver's long outage), when /readyz fails: the app would
// otherwise never start again.
func checkHealthcheckInProcess(tb testing.TB, args []string, env map[string]string) {
	tb.Helper()
	hp := startHookproxy(tb, map[string]string{
		"MAX_BODY_BYTES": "64KiB", "MAX_PENDING_BYTES": "100KiB", "BATCH_TIME": "1h",
	})
	adminAddr := hp.logs.field("admin listening", "admin_addr")
	environ := []string{"HOOKPROXY_ADMIN_LISTEN=" + adminAddr}
	if tok := env["HOOKPROXY_ADMIN_TOKEN"]; tok != "" {
		environ = append(environ, "HOOKPROXY_ADMIN_TOKEN="+tok)
	}
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		return run(ctx, args, environ, io.Discard, io.Discard)
	}
	if err := check(); err != nil {
		tb.Errorf("health check %q fails against a running hookproxy: %v", args, err)
	}
	body := `{"pad":"` + strings.Repeat("x", 48<<10) + `"}`
	postHooks(tb, proxyClient(tb, hp.proxyURL), []clientRequest{
		{URL: "http://receiver.invalid/a", Body: body}, {URL: "http://receiver.invalid/a", Body: body},
	})
	resp, err := http.Get("http://" + adminAddr + "/readyz")
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		tb.Fatalf("/readyz with 96KiB of 100KiB pending: %d, want 503", resp.StatusCode)
	}
	if err := check(); err != nil {
		tb.Errorf("health check %q fails while the buffer is nearly full: the app would never start: %v", args, err)
	}
	hp.stop(tb)
	if err := check(); err == nil {
		tb.Errorf("health check %q passes with hookproxy stopped", args)
	}
}

// --- the example app, run as compose runs it --------------------------------

// TestExampleDjangoAppFromCompose runs examples/django on Debian's Django
// 3.2 and django-rest-hooks 1.6 (the packages its image installs) with the
// environment docker-compose.yml gives it, through a hookproxy configured
// as docker-compose.yml configures it. Only the addresses change: each
// service name becomes a loopback address, each named volume a directory,
// and the PostgreSQL URL a SQLite file. The receivers are on 127.0.0.2-4,
// not 127.0.0.1, which the app's NO_PROXY lists.
func TestExampleDjangoAppFromCompose(t *testing.T) {
	p := loadCompose(t)
	hpSvc, appSvc, rcvSvc := composeService(t, p, "hookproxy"), composeService(t, p, "app"), composeService(t, p, "receiver")
	hpEnv, appEnv := composeEnv(t, hpSvc), composeEnv(t, appSvc)
	cfg := checkSettings(t, "docker-compose.yml hookproxy", hpEnv)

	// Named volumes become directories, shared as compose shares them.
	volumes := map[string]string{}
	onHost := func(s types.ServiceConfig, file string) string {
		t.Helper()
		m, rel, ok := composeMount(s, file)
		if !ok || m.Type != types.VolumeTypeVolume {
			t.Fatalf("service %s: %s is not on a named volume", s.Name, file)
		}
		if volumes[m.Source] == "" {
			volumes[m.Source] = t.TempDir()
		}
		return filepath.Join(volumes[m.Source], rel)
	}

	// The receivers: the example receiver as the compose "receiver"
	// service, and two of the tests' own (plain and HTTPS) that record
	// every request.
	demo := startExampleReceiver(t, "127.0.0.4", composeEnv(t, rcvSvc))
	plain := newReceiverAt(t, "127.0.0.2", nil)
	// HTTPS: the test's receiver has a self-signed certificate, which
	// hookproxy is told to trust, as for a receiver on a private CA.
	secure, receiverCA := newTLSReceiverAt(t, "127.0.0.3")
	settings := map[string]string{}
	for k, v := range hpEnv {
		if name, ok := strings.CutPrefix(k, envPrefix); ok {
			settings[name] = v
		}
	}
	// startHookproxy listens on loopback and logs JSON, which it reads.
	for _, k := range []string{"LISTEN", "ADMIN_LISTEN", "LOG_FORMAT", "LOG_LEVEL"} {
		delete(settings, k)
	}
	settings["DATA_DIR"] = onHost(hpSvc, cfg.DataDir)
	settings["CA_BUNDLE_FILE"] = onHost(hpSvc, cfg.caBundleFile())
	settings["UPSTREAM_CA_FILE"] = receiverCA
	hp := startHookproxy(t, settings)
	proxyAddr := strings.TrimPrefix(hp.proxyURL, "http://")
	adminAddr := hp.logs.field("admin listening", "admin_addr")

	// The app's environment, service addresses replaced.
	hosts := map[string]string{
		"hookproxy:" + portOf(t, cfg.Listen):      proxyAddr,
		"hookproxy:" + portOf(t, cfg.AdminListen): adminAddr,
	}
	serviceAddr := regexp.MustCompile(`\b([a-z][a-z0-9_-]*):([0-9]+)\b`)
	environ := []string{}
	for k, v := range appEnv {
		switch k {
		case "DATABASE_URL":
			v = "sqlite:///" + filepath.Join(t.TempDir(), "shop.sqlite3") // no PostgreSQL here
		case "REQUESTS_CA_BUNDLE":
			v = onHost(appSvc, v)
			if v != settings["CA_BUNDLE_FILE"] {
				t.Fatalf("REQUESTS_CA_BUNDLE is %s on the host, hookproxy writes %s", v, settings["CA_BUNDLE_FILE"])
			}
		default:
			v = serviceAddr.ReplaceAllStringFunc(v, func(hostPort string) string {
				if a, ok := hosts[hostPort]; ok {
					return a
				}
				if strings.HasPrefix(hostPort, rcvSvc.Name+":") {
					return demo.addr
				}
				if _, ok := p.Services[strings.Split(hostPort, ":")[0]]; ok {
					t.Fatalf("app: %s=%s: no loopback address for %s", k, v, hostPort)
				}
				return hostPort
			})
		}
		environ = append(environ, k+"="+v)
	}
	t.Logf("app environment: %q", environ)

	manage := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		cmd := exec.CommandContext(ctx, python, append([]string{"manage.py"}, args...)...)
		cmd.Dir = filepath.Join("examples", "django")
		cmd.Env = pythonEnv(environ...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("manage.py %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
		}
		return string(out)
	}
	manage("migrate", "--noinput", "-v", "0")
	manage("subscribe") // DEMO_TARGETS, as the image's command does
	targets := map[string]*receiver{plain.srv.URL + "/hooks/plain": plain, secure.srv.URL + "/hooks/secure": secure}
	manage(append([]string{"subscribe"}, slices.Sorted(func(yield func(string) bool) {
		for u := range targets {
			if !yield(u) {
				return
			}
		}
	})...)...)

	// Two full batches and a remainder, the last book through the view.
	books := 2*cfg.BatchSize + 3
	manage("add_books", strconv.Itoa(books-1))
	out := manage("shell", "-c", `from django.test import Client; print(Client().post("/books/", {"title": "through the view"}).status_code)`)
	if strings.TrimSpace(out) != "201" {
		t.Fatalf("POST /books/: %s", out)
	}

	for target, rc := range targets {
		got := rc.waitHooks(t, books)
		if p := allPKs(t, got); !slices.Equal(p, seq(1, books)) {
			t.Errorf("%s: books %v, want 1..%d in order", target, p, books)
		}
		sizes := batchSizes(t, got)
		if slices.Max(sizes) > cfg.BatchSize || slices.Max(sizes) < 2 {
			t.Errorf("%s: batch sizes %v, want batches of 2..%d hooks", target, sizes, cfg.BatchSize)
		}
		for _, r := range got {
			checkBatchHeaders(t, r)
			for _, h := range r.hooks(t) {
				var body struct {
					Hook struct{ Event, Target string }
				}
				if err := json.Unmarshal(h, &body); err != nil || body.Hook.Event != "book.added" || body.Hook.Target != target {
					t.Errorf("%s: hook %s", target, h)
				}
			}
		}
		t.Logf("%s: batches of %v", target, sizes)
	}
	// The example receiver, with the compose file's secret, accepts what
	// hookproxy sends.
	lines := demo.waitHooks(t, books)
	for _, l := range lines {
		if !strings.HasPrefix(l, "batch ") || !strings.Contains(l, " on /hooks/books: ") {
			t.Errorf("example receiver: %q, want a batch on /hooks/books", l)
		}
		if composeEnv(t, rcvSvc)["WEBHOOK_SECRET"] != "" && !strings.HasSuffix(l, ", signature ok") {
			t.Errorf("example receiver: %q: signature not checked", l)
		}
	}
}

// newReceiverAt is newReceiver listening on ip (a loopback address).
func newReceiverAt(tb testing.TB, ip string, status func(int) int) *receiver {
	tb.Helper()
	rc := newReceiver(tb, status)
	loopback := rc.srv
	rc.srv = httptest.NewUnstartedServer(loopback.Config.Handler)
	rc.srv.Listener.Close()
	rc.srv.Listener = listenOn(tb, ip)
	rc.srv.Start()
	loopback.Close()
	tb.Cleanup(rc.srv.Close)
	return rc
}

// newTLSReceiverAt is newReceiver over HTTPS on ip, with a self-signed
// certificate for ip, which it returns as a PEM file.
func newTLSReceiverAt(tb testing.TB, ip string) (*receiver, string) {
	tb.Helper()
	rc := newReceiver(tb, nil)
	loopback := rc.srv
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hookproxy test receiver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP(ip)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	certFile := filepath.Join(tb.TempDir(), "receiver.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		tb.Fatal(err)
	}
	rc.srv = httptest.NewUnstartedServer(loopback.Config.Handler)
	rc.srv.Listener.Close()
	rc.srv.Listener = listenOn(tb, ip)
	rc.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	rc.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	rc.srv.StartTLS()
	loopback.Close()
	tb.Cleanup(rc.srv.Close)
	return rc, certFile
}

func listenOn(tb testing.TB, ip string) net.Listener {
	tb.Helper()
	if !netip.MustParseAddr(ip).IsLoopback() {
		tb.Fatalf("%s is not a loopback address", ip)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		tb.Fatalf("listen on %s (Linux routes all of 127.0.0.0/8 to lo): %v", ip, err)
	}
	return ln
}

// exampleReceiver is examples/receiver/receiver.py running on loopback.
type exampleReceiver struct {
	addr string
	out  *lockedBuffer
}

// startExampleReceiver runs the example receiver on ip with env (its
// compose environment).
func startExampleReceiver(tb testing.TB, ip string, env map[string]string) *exampleReceiver {
	tb.Helper()
	var extra []string
	for k, v := range env {
		extra = append(extra, k+"="+v)
	}
	cmd := exec.Command(python, filepath.Join("examples", "receiver", "receiver.py"), ip+":0")
	cmd.Env = pythonEnv(extra...)
	er := &exampleReceiver{out: &lockedBuffer{}}
	cmd.Stdout = er.out
	cmd.Stderr = er.out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(waitLimit):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	listening := regexp.MustCompile(`receiver listening on (\S+):(\d+),`)
	deadline := time.After(waitLimit)
	for {
		changed := er.out.wait()
		if m := listening.FindStringSubmatch(er.out.String()); m != nil {
			er.addr = net.JoinHostPort(m[1], m[2])
			return er
		}
		select {
		case <-changed:
		case <-exited:
			tb.Fatalf("example receiver exited:\n%s", er.out.String())
		case <-deadline:
			tb.Fatalf("example receiver did not start:\n%s", er.out.String())
		}
	}
}

// lines returns the receiver's log lines about requests.
func (er *exampleReceiver) lines() []string {
	var out []string
	for l := range strings.Lines(er.out.String()) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "receiver listening") {
			out = append(out, l)
		}
	}
	return out
}

// waitHooks waits until the receiver logged n hooks in total and returns
// its log lines.
func (er *exampleReceiver) waitHooks(tb testing.TB, n int) []string {
	tb.Helper()
	count := regexp.MustCompile(`: (\d+) hooks?: `)
	deadline := time.After(waitLimit)
	for {
		changed := er.out.wait()
		total := 0
		for _, l := range er.lines() {
			if m := count.FindStringSubmatch(l); m != nil {
				k, _ := strconv.Atoi(m[1])
				total += k
			}
		}
		if total >= n {
			return er.lines()
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("example receiver: %d of %d hooks:\n%s", total, n, er.out.String())
		}
	}
}

// TestExampleReceiverVerifiesSignatures: the example receiver accepts a
// batch signed the Standard Webhooks way and refuses every other, drops
// a repeat, and without a secret accepts anything.
func TestExampleReceiverVerifiesSignatures(t *testing.T) {
	const secret = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXRoZS1leGFtcGxlLXJlY2VpdmVy"
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	sign := func(id string, ts int64, body string) string {
		m := hmac.New(sha256.New, key)
		fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
		return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	er := startExampleReceiver(t, "127.0.0.1", map[string]string{"WEBHOOK_SECRET": secret})
	batch := `[{"hook":{"event":"book.added"},"data":{"pk":1}},{"hook":{"event":"book.added"},"data":{"pk":2}}]`
	now := time.Now().Unix()
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	post := func(er *exampleReceiver, id string, headers map[string]string, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+er.addr+"/hooks/books", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if id != "" {
			req.Header.Set("Idempotency-Key", id)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused, not reset
		resp.Body.Close()
		return resp.StatusCode
	}
	signed := func(id string, ts int64, sig string) map[string]string {
		return map[string]string{"webhook-id": id, "webhook-timestamp": strconv.FormatInt(ts, 10), "webhook-signature": sig}
	}
	for _, c := range []struct {
		name    string
		id      string
		headers map[string]string
		body    string
		want    int
	}{
		{"signed", "B1", signed("B1", now, sign("B1", now, batch)), batch, 200},
		{"repeat", "B1", signed("B1", now, sign("B1", now, batch)), batch, 200},
		{"one of two signatures (rotation)", "B2", signed("B2", now, "v1,AAAA "+sign("B2", now, batch)), batch, 200},
		{"single hook", "B3", signed("B3", now, sign("B3", now, `{"hook":{"event":"book.added"},"data":{"pk":3}}`)), `{"hook":{"event":"book.added"},"data":{"pk":3}}`, 200},
		{"body changed", "B4", signed("B4", now, sign("B4", now, batch)), strings.Replace(batch, "2", "3", 1), 401},
		{"other secret", "B5", signed("B5", now, "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))), batch, 401},
		{"stale", "B6", signed("B6", now-600, sign("B6", now-600, batch)), batch, 401},
		{"unsigned", "B7", nil, batch, 401},
	} {
		if got := post(er, c.id, c.headers, c.body); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
	}
	got := er.waitHooks(t, 5) // B1, B2 (2 hooks each), B3
	want := []string{
		"batch B1 on /hooks/books: 2 hooks: book.added #1, book.added #2, signature ok",
		"repeat of B1 on /hooks/books: dropped",
		"batch B2 on /hooks/books: 2 hooks: book.added #1, book.added #2, signature ok",
		"single hook B3 on /hooks/books: 1 hook: book.added #3, signature ok",
	}
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("receiver log:\n%s\nwant it to start with:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	open := startExampleReceiver(t, "127.0.0.1", nil)
	if got := post(open, "", nil, batch); got != 200 {
		t.Errorf("without a secret: unsigned batch got %d, want 200", got)
	}
	if l := open.waitHooks(t, 2); l[0] != "batch - on /hooks/books: 2 hooks: book.added #1, book.added #2" {
		t.Errorf("without a secret: %q", l)
	}
}

// TestExampleImageInstallsTheTestedPackages: the example app's image pins
// the Django and django-rest-hooks the tests run it on.
func TestExampleImageInstallsTheTestedPackages(t *testing.T) {
	df, err := os.ReadFile(filepath.Join("examples", "django", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pin := range []string{"debian:bookworm", "'python3-django=3:3.2.*'", "'python3-django-rest-hooks=1.6.0-*'", "python3-psycopg2"} {
		if !bytes.Contains(df, []byte(pin)) {
			t.Errorf("examples/django/Dockerfile does not install %s", pin)
		}
	}
	out, err := exec.Command(python, "-c", `import django, importlib.metadata as m; print(django.get_version(), m.version("django-rest-hooks"))`).CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v: %s", err, out)
	}
	if v := strings.Fields(string(out)); len(v) != 2 || !strings.HasPrefix(v[0], "3.2.") || v[1] != "1.6.0" {
		t.Errorf("tests run on Django and django-rest-hooks %q, the image installs 3.2 and 1.6.0", out)
	}
}

// --- Dockerfile -----------------------------------------------------------

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	cmd  string // upper case
	args string
}

// dockerStage is a FROM and the instructions after it.
type dockerStage struct {
	from, name string
	instrs     []dockerInstr
}

// parseDockerfile reads a Dockerfile: the ARGs before the first FROM and
// the stages.
func parseDockerfile(tb testing.TB, name string) (map[string]string, []dockerStage) {
	tb.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	var instrs []dockerInstr
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue // comments, also inside continued instructions
		}
		if more, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		instrs = append(instrs, dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	global := map[string]string{}
	var stages []dockerStage
	for _, in := range instrs {
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			st := dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
		case len(stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			global[k] = v
		case len(stages) > 0:
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
		}
	}
	return global, stages
}

// all returns the arguments of every instruction cmd of the stage.
func (s dockerStage) all(cmd string) []string {
	var out []string
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// execForm parses an exec-form (JSON array) argument.
func execForm(tb testing.TB, what, s string) []string {
	tb.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil || len(v) == 0 {
		tb.Fatalf("Dockerfile %s %s: want the exec form [\"...\"]: %v", what, s, err)
	}
	return v
}

// dockerEnv is the ENV of a stage ("K=V K2=V2" per instruction).
func dockerEnv(s dockerStage) map[string]string {
	env := map[string]string{}
	for _, a := range s.all("ENV") {
		for _, kv := range strings.Fields(a) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = strings.Trim(v, `"`)
			}
		}
	}
	return env
}

// shellWords splits a shell command line into words (quotes, no escapes).
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// finalStage is the Dockerfile's last stage: the image.
func finalStage(tb testing.TB) dockerStage {
	tb.Helper()
	_, stages := parseDockerfile(tb, "Dockerfile")
	return stages[len(stages)-1]
}

// dockerEntrypoint is the image's ENTRYPOINT.
func dockerEntrypoint(tb testing.TB) []string {
	tb.Helper()
	eps := finalStage(tb).all("ENTRYPOINT")
	if len(eps) != 1 {
		tb.Fatalf("Dockerfile: want one ENTRYPOINT in the final stage, got %q", eps)
	}
	return execForm(tb, "ENTRYPOINT", eps[0])
}

// goBuild is the build stage's go build: its environment assignments and
// its arguments after "go build".
type goBuild struct {
	env  map[string]string
	args []string
}

func dockerGoBuild(tb testing.TB, s dockerStage) goBuild {
	tb.Helper()
	for _, run := range s.all("RUN") {
		words := shellWords(run)
		i := slices.Index(words, "go")
		if i < 0 || i+1 >= len(words) || words[i+1] != "build" {
			continue
		}
		gb := goBuild{env: map[string]string{}, args: words[i+2:]}
		for _, w := range words[:i] {
			if strings.HasPrefix(w, "--") {
				continue // RUN --mount=...
			}
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				tb.Fatalf("Dockerfile: go build runs after %q: want only VAR=value before it", w)
			}
			gb.env[k] = v
		}
		return gb
	}
	tb.Fatalf("Dockerfile: no RUN ... go build in stage %s", s.name)
	return goBuild{}
}

// flagValue is the value of -name (as "-name value" or "-name=value").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// TestDockerfileBuildsTheBinary: the Dockerfile builds the same binary as
// `go build .` (static, version stamped), into a non-root image with its
// data on a volume; its command, and its health check, are commands the
// binary has, and they work.
func TestDockerfileBuildsTheBinary(t *testing.T) {
	global, stages := parseDockerfile(t, "Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build, got %d stage(s)", len(stages))
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVersion := global["GO_VERSION"]; goLine == nil || goVersion != string(goLine[1]) {
		t.Errorf("Dockerfile: ARG GO_VERSION=%s, go.mod says go %s", goVersion, goLine[1])
	}

	build := stages[0]
	if build.from != "golang:${GO_VERSION}" || build.name == "" {
		t.Errorf("Dockerfile: build stage FROM %s AS %q, want golang:${GO_VERSION} AS <name>", build.from, build.name)
	}
	gb := dockerGoBuild(t, build)
	if gb.env["CGO_ENABLED"] != "0" {
		t.Errorf("Dockerfile: go build with CGO_ENABLED=%q, want 0 (a static binary)", gb.env["CGO_ENABLED"])
	}
	ldflags, _ := flagValue(gb.args, "-ldflags")
	if !slices.Contains(strings.Fields(ldflags), "main.version=${VERSION}") || !strings.Contains(ldflags, "-X main.version=${VERSION}") {
		t.Errorf("Dockerfile: go build -ldflags %q does not stamp -X main.version=${VERSION}", ldflags)
	}
	if !slices.Contains(build.all("ARG"), "VERSION=dev") && !slices.ContainsFunc(build.all("ARG"), func(a string) bool { return strings.HasPrefix(a, "VERSION") }) {
		t.Error("Dockerfile: the build stage has no ARG VERSION")
	}
	if gb.args[len(gb.args)-1] != "." {
		t.Errorf("Dockerfile: go build %q does not build the package in . (main)", gb.args)
	}
	out, ok := flagValue(gb.args, "-o")
	if !ok {
		t.Fatal("Dockerfile: go build has no -o")
	}

	// The image: the binary from the build stage, as the entrypoint.
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("Dockerfile: image FROM %s, want distroless/static or scratch", final.from)
	}
	entry := dockerEntrypoint(t)
	if !slices.Contains(final.all("COPY"), "--from="+build.name+" "+out+" "+entry[0]) {
		t.Errorf("Dockerfile: no COPY --from=%s %s %s for the ENTRYPOINT %q", build.name, out, entry[0], entry)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Fatal("Dockerfile: no USER: the image would run as root")
	}
	user := users[len(users)-1]
	if uid := strings.Split(user, ":")[0]; uid == "0" || uid == "root" {
		t.Errorf("Dockerfile: USER %s is root", user)
	} else if _, err := strconv.Atoi(uid); err != nil {
		t.Errorf("Dockerfile: USER %s: use a numeric uid, so Kubernetes' runAsNonRoot can check it", user)
	}
	env := dockerEnv(final)
	cfg := checkSettings(t, "Dockerfile ENV", env)
	vols := final.all("VOLUME")
	if len(vols) != 1 || !slices.Contains(execForm(t, "VOLUME", vols[0]), cfg.DataDir) {
		t.Errorf("Dockerfile: VOLUME %q, want the data dir %s", vols, cfg.DataDir)
	}
	// A fresh named volume takes the owner of the image's directory.
	if !slices.ContainsFunc(final.all("COPY"), func(c string) bool {
		f := strings.Fields(c)
		return slices.Contains(f, "--chown="+user) && f[len(f)-1] == cfg.DataDir
	}) {
		t.Errorf("Dockerfile: %s is not created owned by %s: a new volume there would not be writable", cfg.DataDir, user)
	}
	var exposed []string
	for _, e := range final.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(e)...)
	}
	for _, addr := range []string{cfg.Listen, cfg.AdminListen} {
		if !slices.Contains(exposed, portOf(t, addr)) {
			t.Errorf("Dockerfile: EXPOSE %v lacks port %s (%s)", exposed, portOf(t, addr), addr)
		}
	}
	cmds := final.all("CMD")
	hcs := final.all("HEALTHCHECK")
	if len(cmds) != 1 || len(hcs) != 1 {
		t.Fatalf("Dockerfile: want one CMD and one HEALTHCHECK, got %q and %q", cmds, hcs)
	}
	_, hcCmd, ok := strings.Cut(hcs[0], "CMD ")
	if !ok {
		t.Fatalf("Dockerfile: HEALTHCHECK %s has no CMD", hcs[0])
	}
	hc := execForm(t, "HEALTHCHECK CMD", hcCmd)
	if hc[0] != entry[0] {
		t.Errorf("Dockerfile: HEALTHCHECK runs %s, not the binary %s (the image has no shell and no curl)", hc[0], entry[0])
	}

	// Build as the Dockerfile does, for this machine.
	const stamp = "v0.0.0-docker-test"
	bin := filepath.Join(t.TempDir(), "hookproxy")
	args := []string{"build"}
	for i := 0; i < len(gb.args); i++ {
		a := strings.ReplaceAll(gb.args[i], "${VERSION}", stamp)
		if a == "-o" {
			args = append(args, "-o", bin)
			i++
			continue
		}
		args = append(args, a)
	}
	cmd := exec.Command("go", args...)
	cmd.Env = os.Environ()
	for k, v := range gb.env {
		if strings.HasPrefix(v, "$") {
			continue // $TARGETOS, $TARGETARCH: this machine's
		}
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary is dynamically linked; distroless/static has no libc")
			}
		}
		f.Close()
	}
	if b, err := exec.Command(bin, "version").Output(); err != nil || strings.TrimSpace(string(b)) != "hookproxy "+stamp {
		t.Errorf("%s version: %q, %v; want hookproxy %s", bin, b, err, stamp)
	}

	// ENTRYPOINT + CMD, with the image's ENV (addresses on loopback, the
	// data dir in a temporary directory), then the HEALTHCHECK against it.
	cmdArgs := append(entry[1:], execForm(t, "CMD", cmds[0])...)
	env["HOOKPROXY_LISTEN"] = "127.0.0.1:0"
	env["HOOKPROXY_ADMIN_LISTEN"] = "127.0.0.1:0"
	env["HOOKPROXY_DATA_DIR"] = t.TempDir()
	env["HOOKPROXY_LOG_FORMAT"] = "json"
	srv := exec.Command(bin, cmdArgs...)
	srv.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range env {
		srv.Env = append(srv.Env, k+"="+v)
	}
	logs := &lockedBuffer{}
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		<-exited
	})
	if _, ok := waitStarted(logs, exited); !ok {
		_ = srv.Process.Kill()
		<-exited
		t.Fatalf("%s %q did not start: %v\n%s", bin, cmdArgs, waitErr, logs.String())
	}
	admin := logs.field("admin listening", "admin_addr")
	healthcheck := func() error {
		c := exec.Command(bin, hc[1:]...)
		c.Env = []string{"HOOKPROXY_ADMIN_LISTEN=" + admin}
		b, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, b)
		}
		return nil
	}
	if err := healthcheck(); err != nil {
		t.Errorf("HEALTHCHECK %q against the running image command: %v", hc, err)
	}
	checkHealthcheckInProcess(t, hc[1:], nil)
	_ = srv.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("%q after SIGTERM: %v\n%s", cmdArgs, waitErr, logs.String())
		}
	case <-time.After(waitLimit):
		t.Fatalf("%q did not stop at SIGTERM", cmdArgs)
	}
	if err := healthcheck(); err == nil {
		t.Errorf("HEALTHCHECK %q passes with hookproxy stopped", hc)
	}
}

// dockerignoreMatch reports whether a .dockerignore pattern excludes
// name (slash-separated, relative): the pattern matches it or one of its
// parent directories. "**" matches any number of directories.
func dockerignoreMatch(pattern, name string) bool {
	re := regexp.QuoteMeta(strings.TrimPrefix(path.Clean(pattern), "/"))
	re = strings.ReplaceAll(re, `\*\*/`, `(.*/)?`)
	re = strings.ReplaceAll(re, `\*\*`, `.*`)
	re = strings.ReplaceAll(re, `\*`, `[^/]*`)
	re = strings.ReplaceAll(re, `\?`, `[^/]`)
	m := regexp.MustCompile("^" + re + "(/.*)?$")
	return m.MatchString(name)
}

// TestDockerignoreKeepsTheSources: the build context keeps every file
// `go build .` reads and leaves out the repository's history, local
// binaries and data.
func TestDockerignoreKeepsTheSources(t *testing.T) {
	b, err := os.ReadFile(".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for l := range strings.Lines(string(b)) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			if strings.HasPrefix(l, "!") {
				t.Fatalf(".dockerignore: %s: exceptions are not handled by this test", l)
			}
			patterns = append(patterns, l)
		}
	}
	excluded := func(name string) bool {
		return slices.ContainsFunc(patterns, func(p string) bool { return dockerignoreMatch(p, name) })
	}
	out, err := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{range .GoFiles}}{{$.Dir}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$.Dir}}/{{.}}
{{end}}{{end}}{{end}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root := mustAbs(t, ".")
	needed := []string{"go.mod", "go.sum"}
	for l := range strings.Lines(string(out)) {
		if l = strings.TrimSpace(l); l != "" {
			rel, err := filepath.Rel(root, l)
			if err != nil {
				t.Fatal(err)
			}
			needed = append(needed, filepath.ToSlash(rel))
		}
	}
	if len(needed) < 5 {
		t.Fatalf("go list found only %q", needed)
	}
	for _, f := range needed {
		if excluded(f) {
			t.Errorf(".dockerignore excludes %s, which go build . needs", f)
		}
	}
	for _, f := range []string{".git/config", "hookproxy", "hookproxy-data/MANIFEST", "proxy/proxy_test.go", "examples/django/manage.py"} {
		if !excluded(f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}

// --- deploy/k8s -----------------------------------------------------------

// The parts of Kubernetes objects the tests look at.
type (
	kubeObject struct {
		APIVersion string            `yaml:"apiVersion"`
		Kind       string            `yaml:"kind"`
		Metadata   kubeMeta          `yaml:"metadata"`
		Data       map[string]string `yaml:"data"`
		Spec       kubeSpec          `yaml:"spec"`
		Resources  []string          `yaml:"resources"` // Kustomization
	}
	kubeMeta struct {
		Name string `yaml:"name"`
	}
	kubeSpec struct {
		Template struct {
			Spec kubePodSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []kubeClaim `yaml:"volumeClaimTemplates"`
	}
	kubePodSpec struct {
		TerminationGracePeriodSeconds *int64 `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               struct {
			FSGroup *int64 `yaml:"fsGroup"`
		} `yaml:"securityContext"`
		InitContainers []kubeContainer `yaml:"initContainers"`
		Containers     []kubeContainer `yaml:"containers"`
		Volumes        []kubeVolume    `yaml:"volumes"`
	}
	kubeContainer struct {
		Name          string   `yaml:"name"`
		Image         string   `yaml:"image"`
		Command       []string `yaml:"command"`
		RestartPolicy string   `yaml:"restartPolicy"`
		Env           []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom any    `yaml:"valueFrom"`
		} `yaml:"env"`
		EnvFrom []struct {
			ConfigMapRef *kubeMeta `yaml:"configMapRef"`
		} `yaml:"envFrom"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		StartupProbe   *kubeProbe `yaml:"startupProbe"`
		ReadinessProbe *kubeProbe `yaml:"readinessProbe"`
		LivenessProbe  *kubeProbe `yaml:"livenessProbe"`
		VolumeMounts   []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			ReadOnly  bool   `yaml:"readOnly"`
		} `yaml:"volumeMounts"`
	}
	kubeVolume struct {
		Name     string `yaml:"name"`
		EmptyDir *struct {
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
		PVC map[string]any `yaml:"persistentVolumeClaim"`
	}
	kubeClaim struct {
		Metadata kubeMeta `yaml:"metadata"`
		Spec     struct {
			Resources struct {
				Requests struct {
					Storage string `yaml:"storage"`
				} `yaml:"requests"`
			} `yaml:"resources"`
		} `yaml:"spec"`
	}
	kubeProbe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
	}
)

// loadKube parses every YAML document of deploy/k8s, by file.
func loadKube(tb testing.TB) map[string][]kubeObject {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("deploy", "k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no deploy/k8s/*.yaml: %v", err)
	}
	out := map[string][]kubeObject{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o kubeObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatalf("%s: %v", f, err)
			}
			if o.APIVersion == "" || o.Kind == "" {
				tb.Errorf("%s: a document without apiVersion and kind", f)
			}
			out[filepath.Base(f)] = append(out[filepath.Base(f)], o)
		}
	}
	return out
}

// kubeBytes parses a Kubernetes quantity of bytes in binary units ("1Gi");
// "" is 0 (no limit).
func kubeBytes(tb testing.TB, q string) int64 {
	tb.Helper()
	if q == "" {
		return 0
	}
	for i, unit := range []string{"Ki", "Mi", "Gi", "Ti"} {
		if n, ok := strings.CutSuffix(q, unit); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				tb.Fatalf("quantity %q: %v", q, err)
			}
			return v << (10 * (i + 1))
		}
	}
	v, err := strconv.ParseInt(q, 10, 64)
	if err != nil {
		tb.Fatalf("quantity %q: want bytes or Ki, Mi, Gi, Ti", q)
	}
	return v
}

// port resolves a probe's port (a number or a container port's name).
func (c kubeContainer) port(tb testing.TB, p any) int {
	tb.Helper()
	switch v := p.(type) {
	case int:
		return v
	case string:
		for _, cp := range c.Ports {
			if cp.Name == v {
				return cp.ContainerPort
			}
		}
	}
	tb.Fatalf("container %s: no port %v", c.Name, p)
	return 0
}

func (c kubeContainer) mount(p string) (name, rel string, readOnly, ok bool) {
	best := -1
	for _, m := range c.VolumeMounts {
		r, err := filepath.Rel(m.MountPath, p)
		if err != nil || r == ".." || strings.HasPrefix(r, "../") || len(m.MountPath) <= best {
			continue
		}
		best, name, rel, readOnly, ok = len(m.MountPath), m.Name, r, m.ReadOnly, true
	}
	return name, rel, readOnly, ok
}

// TestKubeManifests: deploy/k8s parses as Kubernetes objects of the
// expected kinds, with hookproxy as a native sidecar configured with known
// variables, probed on /healthz, given a grace period that covers its
// drain, and the app's environment pointing at it.
func TestKubeManifests(t *testing.T) {
	files := loadKube(t)
	kinds := map[string][]string{}
	for f, objs := range files {
		for _, o := range objs {
			kinds[f] = append(kinds[f], o.Kind)
		}
	}
	want := map[string][]string{
		"kustomization.yaml":    {"Kustomization"},
		"hookproxy-config.yaml": {"ConfigMap"},
		"deployment.yaml":       {"Deployment", "Service"},
		"statefulset.yaml":      {"StatefulSet", "Service", "Service"},
	}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("deploy/k8s kinds: %v, want %v", kinds, want)
	}
	for _, r := range files["kustomization.yaml"][0].Resources {
		if _, ok := files[r]; !ok {
			t.Errorf("kustomization.yaml: resource %s is not in deploy/k8s", r)
		}
	}
	cm := files["hookproxy-config.yaml"][0]
	for k := range cm.Data {
		if !strings.HasPrefix(k, envPrefix) && k != "GOMEMLIMIT" {
			t.Errorf("ConfigMap %s: %s is neither a HOOKPROXY_ variable nor GOMEMLIMIT", cm.Metadata.Name, k)
		}
	}
	image := finalStage(t)
	imageUser, _ := strconv.ParseInt(strings.Split(image.all("USER")[0], ":")[0], 10, 64)

	for _, f := range []string{"deployment.yaml", "statefulset.yaml"} {
		w := files[f][0]
		pod := w.Spec.Template.Spec
		i := slices.IndexFunc(pod.InitContainers, func(c kubeContainer) bool { return c.Name == "hookproxy" })
		if i < 0 {
			t.Errorf("%s: no init container named hookproxy", f)
			continue
		}
		hp := pod.InitContainers[i]
		if hp.RestartPolicy != "Always" {
			t.Errorf("%s: hookproxy's restartPolicy %q: a native sidecar has Always", f, hp.RestartPolicy)
		}
		if len(hp.Command) > 0 {
			t.Errorf("%s: hookproxy overrides the image's entrypoint with %q", f, hp.Command)
		}
		env := map[string]string{}
		for _, ef := range hp.EnvFrom {
			if ef.ConfigMapRef == nil || ef.ConfigMapRef.Name != cm.Metadata.Name {
				t.Errorf("%s: hookproxy's envFrom is not the ConfigMap %s", f, cm.Metadata.Name)
			}
			maps.Copy(env, cm.Data)
		}
		for _, e := range hp.Env {
			if !knownSettings()[e.Name] {
				t.Errorf("%s: hookproxy's env %s is not a variable hookproxy reads", f, e.Name)
			}
			env[e.Name] = e.Value
		}
		cfg := checkSettings(t, f+" hookproxy", env)
		adminPort, _ := strconv.Atoi(portOf(t, cfg.AdminListen))
		// /healthz answers once hookproxy listens and the CA bundle is
		// written. /readyz would hold the app back while the buffer is
		// nearly full (checkHealthcheckInProcess), and needs the admin
		// token when one is set.
		if pr := hp.StartupProbe; pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != "/healthz" || hp.port(t, pr.HTTPGet.Port) != adminPort {
			t.Errorf("%s: hookproxy's startupProbe is not GET /healthz on the admin port %d", f, adminPort)
		}
		// A sidecar's readiness is the pod's: /readyz failing on a stalled
		// sender or a nearly full buffer would take the app out of its
		// Service.
		if hp.ReadinessProbe != nil {
			t.Errorf("%s: hookproxy has a readinessProbe: its failures would take the app's pod out of its Service", f)
		}
		if pr := hp.LivenessProbe; pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != "/healthz" || hp.port(t, pr.HTTPGet.Port) != adminPort {
			t.Errorf("%s: hookproxy's livenessProbe is not GET /healthz on the admin port", f)
		}
		if host, _, _ := net.SplitHostPort(cfg.AdminListen); host == "127.0.0.1" || host == "localhost" {
			t.Errorf("%s: HOOKPROXY_ADMIN_LISTEN=%s: the kubelet probes the pod's IP", f, cfg.AdminListen)
		}
		grace := pod.TerminationGracePeriodSeconds
		if grace == nil || time.Duration(*grace)*time.Second < time.Duration(cfg.DrainTimeout)+shutdownBound {
			t.Errorf("%s: terminationGracePeriodSeconds %v does not cover the drain (%v) plus %v", f, grace, cfg.DrainTimeout, shutdownBound)
		}
		if fs := pod.SecurityContext.FSGroup; fs == nil || *fs != imageUser {
			t.Errorf("%s: fsGroup %v, want the image's user %d so the volumes are writable", f, fs, imageUser)
		}
		// The store on the pod's data volume.
		dataVol, _, _, ok := hp.mount(filepath.Join(cfg.DataDir, "x"))
		if !ok {
			t.Errorf("%s: hookproxy's data dir %s is not on a volume", f, cfg.DataDir)
		}
		vol := slices.IndexFunc(pod.Volumes, func(v kubeVolume) bool { return v.Name == dataVol })
		claim := slices.IndexFunc(w.Spec.VolumeClaimTemplates, func(c kubeClaim) bool { return c.Metadata.Name == dataVol })
		var size string
		switch w.Kind {
		case "Deployment":
			if vol < 0 || pod.Volumes[vol].EmptyDir == nil {
				t.Errorf("%s: no emptyDir pod volume %q for the data", f, dataVol)
			} else {
				size = pod.Volumes[vol].EmptyDir.SizeLimit
			}
		case "StatefulSet":
			if claim < 0 || vol >= 0 {
				t.Errorf("%s: the data volume %q is not a volumeClaimTemplate (a persistent volume per pod)", f, dataVol)
			} else {
				size = w.Spec.VolumeClaimTemplates[claim].Spec.Resources.Requests.Storage
			}
		}
		// A bounded volume needs a bound on what piles up while a
		// receiver is down; the store takes about 1.5x the pending bodies.
		if limit := kubeBytes(t, size); limit > 0 && (cfg.MaxPendingBytes == 0 || int64(cfg.MaxPendingBytes)*3/2 > limit) {
			t.Errorf("%s: data volume of %s, HOOKPROXY_MAX_PENDING_BYTES %d: want a bound whose 1.5x fits the volume", f, size, cfg.MaxPendingBytes)
		}

		// The app: through the sidecar, trusting its bundle.
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: want one app container, got %d", f, len(pod.Containers))
		}
		app := pod.Containers[0]
		appEnv := map[string]string{}
		for _, e := range app.Env {
			appEnv[e.Name] = e.Value
		}
		want := "http://127.0.0.1:" + portOf(t, cfg.Listen)
		for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY"} {
			if appEnv[k] != want {
				t.Errorf("%s: app's %s = %q, want %s", f, k, appEnv[k], want)
			}
		}
		if _, ok := appEnv["NO_PROXY"]; !ok {
			t.Errorf("%s: app has no NO_PROXY", f)
		}
		hpVol, hpRel, _, _ := hp.mount(cfg.caBundleFile())
		appVol, appRel, ro, ok := app.mount(appEnv["REQUESTS_CA_BUNDLE"])
		if !ok || appVol != hpVol || appRel != hpRel || !ro {
			t.Errorf("%s: app's REQUESTS_CA_BUNDLE %q is not hookproxy's bundle %s on a shared volume mounted read-only", f, appEnv["REQUESTS_CA_BUNDLE"], cfg.caBundleFile())
		}
	}
}
