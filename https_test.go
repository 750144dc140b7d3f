package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hookproxy/admin"
	"hookproxy/admin/admintest"
)

// newTLSReceiver is newReceiver served over HTTPS with httptest's
// self-signed certificate (for 127.0.0.1), which nothing trusts unless
// told to.
func newTLSReceiver(tb testing.TB, status func(n int) int) *receiver {
	tb.Helper()
	rc := newReceiver(tb, status)
	plain := rc.srv
	rc.srv = httptest.NewUnstartedServer(plain.Config.Handler)
	// Handshakes that fail on purpose would print to stderr.
	rc.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	rc.srv.StartTLS()
	plain.Close()
	tb.Cleanup(rc.srv.Close)
	return rc
}

// writeCertPEM writes certs to a PEM file and returns its name.
func writeCertPEM(tb testing.TB, certs ...*x509.Certificate) string {
	tb.Helper()
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	name := filepath.Join(tb.TempDir(), "certs.pem")
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
	return name
}

// pemCerts parses every certificate in a PEM file's bytes.
func pemCerts(tb testing.TB, b []byte) []*x509.Certificate {
	tb.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, c)
	}
}

// adminURL is the running instance's admin address.
func (in *instance) adminURL() string {
	return "http://" + in.logs.field("admin listening", "admin_addr")
}

// caPEM fetches the CA certificate from the admin listener.
func (in *instance) caPEM(tb testing.TB) []byte {
	tb.Helper()
	resp, err := http.Get(in.adminURL() + "/ca.pem")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET /ca.pem: %d %v", resp.StatusCode, err)
	}
	return b
}

// httpsClient sends through proxyURL (which may carry credentials) and
// trusts exactly roots.
func httpsClient(tb testing.TB, proxyURL string, roots ...*x509.Certificate) *http.Client {
	tb.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(u), TLSClientConfig: &tls.Config{RootCAs: pool}}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitLimit}
}

// TestHTTPSHookThroughPythonRequests: the app's client, trusting the
// bundle hookproxy wrote, posts hooks to an https:// receiver through
// HTTPS_PROXY and gets 202s; a GET in the same session reaches the
// receiver and returns its real answer; the hooks are delivered as one
// batch over TLS verified with HOOKPROXY_UPSTREAM_CA_FILE.
func TestHTTPSHookThroughPythonRequests(t *testing.T) {
	rc := newTLSReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{
		"BATCH_SIZE":       "2",
		"UPSTREAM_CA_FILE": writeCertPEM(t, rc.srv.Certificate()),
	})
	bundle := hp.logs.field("HTTPS interception ready", "bundle")
	if bundle == "" {
		t.Fatalf("no bundle path in the logs\n%s", hp.logs.String())
	}
	target := rc.srv.URL + "/hooks/https?token=abc" // https://127.0.0.1:PORT/...
	reqs := hookRequests(target, 0, 2)
	reqs = append(reqs, clientRequest{Method: "GET", URL: rc.srv.URL + "/page?q=1", Headers: map[string]string{"X-Trace": "t1"}})
	resps := postWithPython(t, hp.proxyURL, reqs, "REQUESTS_CA_BUNDLE="+bundle)
	checkAccepted(t, resps[:2])
	if r := resps[2]; r.Status != http.StatusOK || r.Headers["X-Receiver"] != "yes" || r.Body != "receiver saw GET /page" {
		t.Fatalf("GET in the tunnel: %d %v %q, want the receiver's own answer", r.Status, r.Headers, r.Body)
	}

	got := rc.waitHooks(t, 2)
	if len(got) != 2 {
		t.Fatalf("receiver got %d requests, want the GET and one batch", len(got))
	}
	// The batch may well arrive before the GET: it is due as soon as the
	// second hook is stored.
	get, batch := got[0], got[1]
	if get.Method != "GET" {
		get, batch = batch, get
	}
	if get.Method != "GET" || get.Path != "/page?q=1" || get.Header.Get("X-Trace") != "t1" {
		t.Errorf("GET arrived as %+v", get)
	}
	checkBatchHeaders(t, batch)
	if batch.Path != "/hooks/https?token=abc" {
		t.Errorf("batch went to %s", batch.Path)
	}
	if p := pks(t, batch.hooks(t)); len(p) != 2 || p[0] != 0 || p[1] != 1 {
		t.Errorf("batch holds %v, want [0 1]", p)
	}
}

// TestHTTPSHookToIPv6ThroughPythonRequests: Debian's python (3.11.2)
// writes the Host of a request inside a tunnel to an IPv6 literal with
// its brackets doubled (CPython gh-100985: CONNECT [::1]:PORT, then
// Host: [[::1]]:PORT). The hooks still go to https://[::1]:PORT, not to
// the dead letters as an invalid URL, and a request passed on arrives
// with Host [::1]:PORT.
func TestHTTPSHookToIPv6ThroughPythonRequests(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	rc := newTLSReceiver(t, nil)
	rc.srv.Close()
	rc.srv = httptest.NewUnstartedServer(rc.srv.Config.Handler)
	rc.srv.Listener = ln
	rc.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	rc.srv.StartTLS() // httptest's certificate holds ::1
	t.Cleanup(rc.srv.Close)
	hp := startHookproxy(t, map[string]string{
		"BATCH_SIZE":       "2",
		"UPSTREAM_CA_FILE": writeCertPEM(t, rc.srv.Certificate()),
	})
	bundle := hp.logs.field("HTTPS interception ready", "bundle")
	target := rc.srv.URL + "/hooks/v6" // https://[::1]:PORT/hooks/v6
	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(target, 0, 2), "REQUESTS_CA_BUNDLE="+bundle))
	got := rc.waitHooks(t, 2)
	if len(got) != 1 || got[0].Path != "/hooks/v6" {
		t.Fatalf("receiver got %+v, want one batch on /hooks/v6", got)
	}
	if p := pks(t, got[0].hooks(t)); len(p) != 2 || p[0] != 0 || p[1] != 1 {
		t.Errorf("batch holds %v, want [0 1]", p)
	}
	host := strings.TrimPrefix(rc.srv.URL, "https://")
	if got[0].Host != host {
		t.Errorf("batch arrived with Host %q, want %q", got[0].Host, host)
	}

	resps := postWithPython(t, hp.proxyURL, []clientRequest{{Method: "GET", URL: rc.srv.URL + "/get"}}, "REQUESTS_CA_BUNDLE="+bundle)
	if resps[0].Status != http.StatusOK {
		t.Fatalf("GET passed on: %d, want the receiver's 200", resps[0].Status)
	}
	got = rc.waitFor(t, "the GET", func(got []received) bool { return len(got) == 2 })
	if got[1].Path != "/get" || got[1].Host != host {
		t.Errorf("GET passed on arrived as %s with Host %q, want /get with Host %q", got[1].Path, got[1].Host, host)
	}
}

// TestHTTPSOutsideMITMHostsIsTunnelled: a host that HOOKPROXY_MITM_HOSTS
// does not select is relayed byte for byte: the app meets the receiver's
// own certificate and its hook goes straight to the receiver.
func TestHTTPSOutsideMITMHostsIsTunnelled(t *testing.T) {
	rc := newTLSReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"MITM_HOSTS": "hooks.example,*.hooks.example"})
	receiverCert := writeCertPEM(t, rc.srv.Certificate())
	resps := postWithPython(t, hp.proxyURL, hookRequests(rc.srv.URL+"/direct", 0, 1), "REQUESTS_CA_BUNDLE="+receiverCert)
	if r := resps[0]; r.Status != http.StatusOK || r.Headers["X-Receiver"] != "yes" {
		t.Fatalf("hook through a relayed tunnel: %d %v, want the receiver's own answer", r.Status, r.Headers)
	}
	if got := rc.requests(); len(got) != 1 || got[0].Path != "/direct" || got[0].Header.Get("Idempotency-Key") != "" {
		t.Fatalf("receiver got %+v, want the app's request itself", got)
	}

	resp, err := httpsClient(t, hp.proxyURL, rc.srv.Certificate()).Get(rc.srv.URL + "/peer")
	if err != nil {
		t.Fatalf("client trusting only the receiver: %v", err)
	}
	resp.Body.Close()
	if !resp.TLS.PeerCertificates[0].Equal(rc.srv.Certificate()) {
		t.Errorf("the client saw a certificate that is not the receiver's")
	}
}

// TestHTTPSCAKeptAcrossRestarts: the generated CA is stored in the data
// directory (key readable by its owner only) and the next start uses the
// same one; the bundle holds the system roots and the CA; "hookproxy ca"
// prints the same certificate.
func TestHTTPSCAKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	hp := startHookproxy(t, map[string]string{"DATA_DIR": dir})
	first := hp.caPEM(t)
	hp.stop(t)

	fi, err := os.Stat(filepath.Join(dir, caDirName, "key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v, mode %v; want 0600", err, fi.Mode())
	}
	bundle, err := os.ReadFile(filepath.Join(dir, bundleFileName))
	if err != nil {
		t.Fatal(err)
	}
	certs := pemCerts(t, bundle)
	ca := pemCerts(t, first)[0]
	if len(certs) < 2 || !certs[len(certs)-1].Equal(ca) {
		t.Fatalf("bundle holds %d certificates, want the system roots followed by the CA", len(certs))
	}

	if !strings.Contains(hp.logs.String(), `"ca_created":true`) {
		t.Errorf("the first start does not log that it created the CA")
	}
	hp = startHookproxy(t, map[string]string{"DATA_DIR": dir})
	if again := hp.caPEM(t); !bytes.Equal(again, first) {
		t.Fatalf("restart changed the CA")
	}
	if !strings.Contains(hp.logs.String(), `"ca_created":false`) {
		t.Errorf("a restart logs that it created the CA it loaded")
	}
	if got := hp.logs.field("HTTPS interception ready", "ca"); got != filepath.Join(dir, caDirName, "cert.pem") {
		t.Errorf("log names the CA %q", got)
	}

	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"ca"}, []string{"HOOKPROXY_DATA_DIR=" + dir}, &out, &errOut); err != nil {
		t.Fatalf("hookproxy ca: %v\n%s", err, errOut.String())
	}
	if !bytes.Equal(out.Bytes(), first) || errOut.Len() != 0 {
		t.Errorf("hookproxy ca printed another certificate, or a word on stderr: %q", errOut.String())
	}
	// Run without the server's data directory, it makes a CA of its own,
	// and says so.
	elsewhere := t.TempDir()
	var other bytes.Buffer
	if err := run(context.Background(), []string{"ca"}, []string{"HOOKPROXY_DATA_DIR=" + elsewhere}, &other, &errOut); err != nil ||
		bytes.Equal(other.Bytes(), first) || !strings.Contains(errOut.String(), "generated a new CA in "+filepath.Join(elsewhere, caDirName)) {
		t.Errorf("hookproxy ca in an empty data directory: %v, stderr %q; want a new CA and a word about it", err, errOut.String())
	}
	errOut.Reset()
	out.Reset()
	if err := run(context.Background(), []string{"ca", "--bundle"}, []string{"HOOKPROXY_DATA_DIR=" + dir}, &out, &errOut); err != nil {
		t.Fatalf("hookproxy ca --bundle: %v", err)
	}
	if !bytes.Equal(out.Bytes(), bundle) {
		t.Errorf("hookproxy ca --bundle differs from the bundle file")
	}

	// The command checks what it reads: the server's settings (a file it
	// reads at start and that is not mounted yet, a listen address, a
	// number written wrong) do not stop it; a CA file it would read does.
	out.Reset()
	serverOnly := []string{"HOOKPROXY_DATA_DIR=" + dir, "HOOKPROXY_LISTEN=127.0.0.1:99999",
		"HOOKPROXY_UPSTREAM_CA_FILE=" + filepath.Join(dir, "not-mounted-yet.pem"), "HOOKPROXY_BATCH_SIZE=ten"}
	if err := run(context.Background(), []string{"ca"}, serverOnly, &out, &errOut); err != nil || !bytes.Equal(out.Bytes(), first) {
		t.Errorf("hookproxy ca with settings only the server reads: %v", err)
	}
	missing := []string{"HOOKPROXY_DATA_DIR=" + dir, "HOOKPROXY_CA_CERT_FILE=" + filepath.Join(dir, "no.crt"),
		"HOOKPROXY_CA_KEY_FILE=" + filepath.Join(dir, "no.key")}
	if err := run(context.Background(), []string{"ca"}, missing, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "HOOKPROXY_CA_CERT_FILE") {
		t.Errorf("hookproxy ca with a CA file that is not there: %v, want an error naming HOOKPROXY_CA_CERT_FILE", err)
	}
}

// operatorCA writes a CA of the operator's own to PEM files.
func operatorCA(tb testing.TB) (cert *x509.Certificate, certFile, keyFile string) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "Operator Root CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	dir := tb.TempDir()
	certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return cert, certFile, keyFile
}

// TestHTTPSOperatorCA: with HOOKPROXY_CA_CERT_FILE and _KEY_FILE, leaves
// chain to the operator's CA and no CA is generated.
func TestHTTPSOperatorCA(t *testing.T) {
	ca, certFile, keyFile := operatorCA(t)
	rc := newTLSReceiver(t, nil)
	dir := t.TempDir()
	hp := startHookproxy(t, map[string]string{"DATA_DIR": dir, "CA_CERT_FILE": certFile, "CA_KEY_FILE": keyFile,
		"UPSTREAM_CA_FILE": writeCertPEM(t, rc.srv.Certificate())})
	resp, err := httpsClient(t, hp.proxyURL, ca).Post(rc.srv.URL+"/t0", "application/json", strings.NewReader(`{"op":1}`))
	if err != nil {
		t.Fatalf("client trusting only the operator's CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("hook: %d, want 202", resp.StatusCode)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("leaf not signed by the operator's CA: %v", err)
	}
	if !bytes.Equal(hp.caPEM(t), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})) {
		t.Errorf("/ca.pem is not the operator's CA")
	}
	if _, err := os.Stat(filepath.Join(dir, caDirName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a CA was generated although the operator gave one: %v", err)
	}
	rc.waitFor(t, "the hook", func(g []received) bool { return len(g) == 1 })

	// hookproxy ca prints the operator's CA, from the same settings.
	var out, errOut bytes.Buffer
	env := []string{"HOOKPROXY_DATA_DIR=" + dir, "HOOKPROXY_CA_CERT_FILE=" + certFile, "HOOKPROXY_CA_KEY_FILE=" + keyFile}
	if err := run(context.Background(), []string{"ca"}, env, &out, &errOut); err != nil ||
		!bytes.Equal(out.Bytes(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})) {
		t.Errorf("hookproxy ca with the operator's CA files: %v %s; want the operator's CA", err, errOut.String())
	}
}

// TestHTTPSCAExpiringWarns: a CA that expires within a leaf's validity
// (operatorCA's ends in a day) is warned about at start: leaves are cut
// to its expiry and, once it has passed, every intercepted handshake
// fails.
func TestHTTPSCAExpiringWarns(t *testing.T) {
	_, certFile, keyFile := operatorCA(t)
	var logs bytes.Buffer
	cfg := Config{DataDir: t.TempDir(), CACertFile: certFile, CAKeyFile: keyFile}
	if _, err := setupHTTPS(cfg, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"the interception CA expires soon") {
		t.Errorf("no warning for a CA that expires in a day:\n%s", logs.String())
	}
}

// TestHTTPSUntrustedReceiverIsDeadLettered: a receiver whose certificate
// hookproxy does not trust gets nothing; the batch is given up with the
// x509 error as its reason.
func TestHTTPSUntrustedReceiverIsDeadLettered(t *testing.T) {
	rc := newTLSReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"RETRIES": "0"})
	bundle := hp.logs.field("HTTPS interception ready", "bundle")
	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(rc.srv.URL+"/untrusted", 0, 1), "REQUESTS_CA_BUNDLE="+bundle))
	waitLogs(t, hp.logs, "batch given up", 1)

	var list admin.DeadLetterList
	if code := admintest.Call(t, "GET", hp.adminURL()+"/api/dead-letters", "", nil, &list); code != http.StatusOK || list.Total != 1 {
		t.Fatalf("dead letters: %d, %+v", code, list)
	}
	d := list.DeadLetters[0]
	if d.Target != rc.srv.URL+"/untrusted" || !strings.Contains(d.Detail, "x509") || !strings.Contains(d.Detail, "certificate") {
		t.Errorf("dead letter %+v: want the target and an x509 certificate error", d)
	}
	if got := rc.requests(); len(got) != 0 {
		t.Errorf("an untrusted receiver got %d requests", len(got))
	}
}

// TestHTTPSProxyAuth: with HOOKPROXY_PROXY_AUTH, requests and CONNECTs
// without the right credentials get 407; python requests with
// http://user:password@host:port works for http:// and https:// targets.
func TestHTTPSProxyAuth(t *testing.T) {
	rc := newReceiver(t, nil)
	tlsRC := newTLSReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"PROXY_AUTH": "app:pa55:word", "UPSTREAM_CA_FILE": writeCertPEM(t, tlsRC.srv.Certificate())})
	bundle := hp.logs.field("HTTPS interception ready", "bundle")
	withCreds := func(userinfo string) string {
		return strings.Replace(hp.proxyURL, "http://", "http://"+userinfo+"@", 1)
	}

	for name, proxyURL := range map[string]string{"none": hp.proxyURL, "wrong": withCreds("app:nope")} {
		resps := postWithPython(t, proxyURL, hookRequests(rc.srv.URL+"/plain", 0, 1))
		if resps[0].Status != http.StatusProxyAuthRequired || resps[0].Headers["Proxy-Authenticate"] != `Basic realm="hookproxy"` {
			t.Errorf("%s credentials, plain http: %d %v, want 407 with a Basic challenge", name, resps[0].Status, resps[0].Headers)
		}
		// A CONNECT as python sends it: HTTP/1.0, with the credentials as
		// the only header.
		c, err := net.Dial("tcp", strings.TrimPrefix(hp.proxyURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		head := "CONNECT hooks.example:443 HTTP/1.0\r\n"
		if name == "wrong" {
			head += "Proxy-Authorization: Basic YXBwOm5vcGU=\r\n"
		}
		_, _ = io.WriteString(c, head+"\r\n")
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
		c.Close()
		if err != nil || resp.StatusCode != http.StatusProxyAuthRequired {
			t.Errorf("%s credentials, CONNECT: %v %v, want 407", name, resp, err)
		}
	}
	if got := rc.requests(); len(got) != 0 {
		t.Fatalf("refused requests reached the receiver: %d", len(got))
	}

	reqs := append(hookRequests(rc.srv.URL+"/plain", 0, 1), hookRequests(tlsRC.srv.URL+"/secure", 1, 2)...)
	checkAccepted(t, postWithPython(t, withCreds("app:pa55:word"), reqs, "REQUESTS_CA_BUNDLE="+bundle))
	rc.waitFor(t, "the plain hook", func(g []received) bool { return len(g) == 1 })
	tlsRC.waitFor(t, "the https hooks", func(g []received) bool { return len(g) == 2 })
	if strings.Contains(hp.logs.String(), "pa55") {
		t.Errorf("the proxy password reached the logs")
	}
}

// TestProxyAuthFromAFile: proxy credentials read from a file end with a
// newline, which hookproxy drops (as it does for the admin token): the
// app's user:password is accepted, not answered 407.
func TestProxyAuthFromAFile(t *testing.T) {
	rc := newReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"PROXY_AUTH": "app:pw\n"})
	c := proxyClient(t, strings.Replace(hp.proxyURL, "http://", "http://app:pw@", 1))
	resp, err := c.Get(rc.srv.URL + "/page")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET through the proxy with app:pw: %d, want 200", resp.StatusCode)
	}
}

// TestHTTPSSettingsRefused: bad HTTPS settings stop hookproxy at start
// with an error that names the variable, and never repeats the proxy
// password.
func TestHTTPSSettingsRefused(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		settings map[string]string
		want     string
	}{
		{"cert without key", map[string]string{"CA_CERT_FILE": notPEM}, "HOOKPROXY_CA_KEY_FILE"},
		{"key without cert", map[string]string{"CA_KEY_FILE": notPEM}, "HOOKPROXY_CA_CERT_FILE"},
		{"unreadable operator CA", map[string]string{"CA_CERT_FILE": notPEM, "CA_KEY_FILE": notPEM}, "HOOKPROXY_CA_CERT_FILE"},
		{"proxy auth without password", map[string]string{"PROXY_AUTH": "s3cretuser"}, "HOOKPROXY_PROXY_AUTH"},
		{"upstream CA not PEM", map[string]string{"UPSTREAM_CA_FILE": notPEM}, "HOOKPROXY_UPSTREAM_CA_FILE"},
		{"MITM host with a port", map[string]string{"MITM_HOSTS": "hooks.example:443"}, "HOOKPROXY_MITM_HOSTS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			environ := []string{"HOOKPROXY_LISTEN=127.0.0.1:0", "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:0", "HOOKPROXY_DATA_DIR=" + t.TempDir()}
			for k, v := range tt.settings {
				environ = append(environ, envPrefix+k+"="+v)
			}
			var logs bytes.Buffer
			err := run(context.Background(), nil, environ, io.Discard, &logs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run = %v, want an error naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(logs.String(), "s3cret") {
				t.Errorf("the proxy credentials were repeated: %v", err)
			}
		})
	}
}

// TestBundleNeverReplacesAFileItReads: hookproxy writes the CA bundle at
// every start, replacing what is at HOOKPROXY_CA_BUNDLE_FILE. A bundle
// path that names the CA's key or certificate, the upstream CA file or
// the generated CA's files (a slip: "the CA file") is refused at start,
// and the file is left as it was. Without the check the first start
// succeeded, the operator's private key was overwritten with the bundle,
// and the next start failed for want of a key that was gone for good.
func TestBundleNeverReplacesAFileItReads(t *testing.T) {
	// files are the paths a case may point the bundle at, each test's own.
	type files struct{ cert, key, link, upstream, data string }
	for _, tt := range []struct {
		name     string
		operator bool // the operator's CA, rather than a generated one
		bundle   func(f files) string
	}{
		{"the CA key", true, func(f files) string { return f.key }},
		{"the CA key, written another way", true, func(f files) string {
			return filepath.Join(filepath.Dir(f.key), ".", filepath.Base(f.key))
		}},
		{"the CA key through a link", true, func(f files) string { return f.link }},
		{"the CA certificate", true, func(f files) string { return f.cert }},
		{"the upstream CA file", false, func(f files) string { return f.upstream }},
		{"the generated CA's key", false, func(f files) string { return filepath.Join(f.data, caDirName, "key.pem") }},
		{"the generated CA's certificate", false, func(f files) string { return filepath.Join(f.data, caDirName, "cert.pem") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var f files
			_, f.cert, f.key = operatorCA(t)
			f.link, f.upstream, f.data = filepath.Join(t.TempDir(), "key-link.pem"), writeCertPEM(t, newTLSReceiver(t, nil).srv.Certificate()), t.TempDir()
			if err := os.Symlink(f.key, f.link); err != nil {
				t.Fatal(err)
			}
			environ := []string{"HOOKPROXY_LISTEN=127.0.0.1:0", "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:0", "HOOKPROXY_MEMORY_LIMIT=0",
				"HOOKPROXY_DATA_DIR=" + f.data, "HOOKPROXY_UPSTREAM_CA_FILE=" + f.upstream}
			if tt.operator {
				environ = append(environ, "HOOKPROXY_CA_CERT_FILE="+f.cert, "HOOKPROXY_CA_KEY_FILE="+f.key)
			} else if err := run(t.Context(), []string{"ca"}, environ, io.Discard, io.Discard); err != nil {
				t.Fatalf("generate the CA: %v", err)
			}
			bundle := tt.bundle(f)
			before, err := os.ReadFile(bundle)
			if err != nil {
				t.Fatal(err)
			}
			// Should the setting be accepted, hookproxy starts and stops
			// at once (the context is done), having written the bundle.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			err = run(ctx, nil, append(environ, "HOOKPROXY_CA_BUNDLE_FILE="+bundle), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "HOOKPROXY_CA_BUNDLE_FILE") {
				t.Errorf("bundle at %s: run = %v, want an error naming HOOKPROXY_CA_BUNDLE_FILE", bundle, err)
			}
			if after, _ := os.ReadFile(bundle); !bytes.Equal(after, before) {
				t.Errorf("%s was replaced by the bundle", bundle)
			}
		})
	}
}
