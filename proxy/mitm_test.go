package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"hookproxy/mitm"
)

// newCA opens a generated CA in a temporary directory.
func newCA(tb testing.TB) *mitm.Authority {
	tb.Helper()
	ca, err := mitm.Open(mitm.Options{Dir: filepath.Join(tb.TempDir(), "ca")})
	if err != nil {
		tb.Fatalf("open CA: %v", err)
	}
	return ca
}

// trusting is a client TLS config that trusts exactly certs.
func trusting(certs ...*x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &tls.Config{RootCAs: pool}
}

// intercepted opens a CONNECT tunnel to hostport through tp, completes
// the TLS handshake with tp's certificate from ca inside it, the way
// urllib3 does (ALPN http/1.1), and returns the connection inside.
func intercepted(tb testing.TB, tp *testProxy, ca *mitm.Authority, hostport string) *rawConn {
	tb.Helper()
	c, _ := interceptedWith(tb, tp, ca, hostport, nil)
	return c
}

// tunnelTo starts a proxy on opts that intercepts HTTPS and trusts rc, a
// TLS receiver, upstream (opts.Store nil: a fakeStore), and opens an
// intercepted tunnel to rc through it. It returns the proxy, the tunnel
// and rc's host:port.
func tunnelTo(tb testing.TB, rc *receiver, opts Options) (*testProxy, *rawConn, string) {
	tb.Helper()
	ca := newCA(tb)
	if opts.Store == nil {
		opts.Store = &fakeStore{}
	}
	opts.TLSConfig, opts.UpstreamTLSConfig = ca.TLSConfig, rc.tlsConfig()
	tp := startProxy(tb, opts)
	u, _ := url.Parse(rc.URL)
	return tp, intercepted(tb, tp, ca, u.Host), u.Host
}

// interceptedWith is intercepted with the client's TLS configuration
// changed by tweak (when not nil); it also returns the TCP connection
// under the TLS one, for a test that closes it alone.
func interceptedWith(tb testing.TB, tp *testProxy, ca *mitm.Authority, hostport string, tweak func(*tls.Config)) (*rawConn, *net.TCPConn) {
	tb.Helper()
	raw := connect(tb, tp.Addr, hostport)
	tc := trusting(ca.Certificate())
	tc.ServerName, _, _ = net.SplitHostPort(hostport)
	tc.NextProtos = []string{"http/1.1"}
	if tweak != nil {
		tweak(tc)
	}
	conn := tls.Client(raw.Conn, tc)
	if err := conn.Handshake(); err != nil {
		tb.Fatalf("TLS handshake inside the tunnel: %v", err)
	}
	return &rawConn{Conn: conn, br: bufio.NewReader(conn)}, raw.Conn.(*net.TCPConn)
}

// clientVia is an http.Client that sends through proxyURL and trusts tc.
func clientVia(tb testing.TB, proxyURL *url.URL, tc *tls.Config) *http.Client {
	tb.Helper()
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: tc}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

// passLog records the methods OnPassThrough sees.
type passLog struct {
	mu      sync.Mutex
	methods []string
}

func (l *passLog) record(r *http.Request) {
	l.mu.Lock()
	l.methods = append(l.methods, r.Method)
	l.mu.Unlock()
}

func (l *passLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.methods)
}

// TestMITMCapturesHookAndForwardsTheRest: inside one intercepted tunnel,
// hooks are captured with their https:// target and everything else
// reaches the receiver over verified TLS, on one client connection.
func TestMITMCapturesHookAndForwardsTheRest(t *testing.T) {
	store := openStore(t)
	rc := newReceiver(t, nil, true)
	ca := newCA(t)
	passed := new(passLog)
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig, UpstreamTLSConfig: rc.tlsConfig(), OnPassThrough: passed.record})
	client := clientVia(t, tp.URL, trusting(ca.Certificate()))

	target := rc.URL + "/hooks/t0?token=abc"
	var ids []string
	for i := range 3 {
		req := mustRequest(t, http.MethodPost, target, []byte(hookBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-App", "a"+strconv.Itoa(i))
		resp, body := do(t, client, req)
		ids = append(ids, assertAccepted(t, resp, body))
		if err := resp.TLS.PeerCertificates[0].CheckSignatureFrom(ca.Certificate()); err != nil {
			t.Fatalf("the app did not talk to hookproxy's certificate: %v", err)
		}
		resp, body = do(t, client, mustRequest(t, http.MethodGet, rc.URL+"/page?q="+strconv.Itoa(i), nil))
		if resp.StatusCode != http.StatusTeapot || resp.Header.Get("X-Receiver") != "yes" || string(body) != "receiver says hi to GET" {
			t.Fatalf("GET through the tunnel: %d %v %q, want the receiver's answer", resp.StatusCode, resp.Header, body)
		}
	}

	hooks := storedHooks(t, store)
	if len(hooks) != 3 {
		t.Fatalf("stored %d hooks, want 3", len(hooks))
	}
	for i, h := range hooks {
		if h.ID != ids[i] || h.Target != target || h.Method != http.MethodPost || string(h.Body) != hookBody {
			t.Errorf("hook %d = %+v, want target %s", i, h, target)
		}
		if h.Header.Get("X-App") != "a"+strconv.Itoa(i) || h.Header.Get("Content-Type") != "application/json" {
			t.Errorf("hook %d headers %v", i, h.Header)
		}
	}
	reqs := rc.requests()
	if len(reqs) != 3 {
		t.Fatalf("receiver got %d requests, want the 3 GETs only", len(reqs))
	}
	for i, r := range reqs {
		if r.Method != http.MethodGet || r.URI != "/page?q="+strconv.Itoa(i) {
			t.Errorf("receiver request %d = %s %s", i, r.Method, r.URI)
		}
	}
	if n := tp.listener.accepts.Load(); n != 1 {
		t.Errorf("client opened %d connections to the proxy, want one tunnel for everything", n)
	}
	if n := rc.conns.Load(); n != 1 {
		t.Errorf("proxy opened %d connections to the receiver, want 1 (kept alive)", n)
	}
	if got := passed.get(); !slices.Equal(got, []string{"GET", "GET", "GET"}) {
		t.Errorf("OnPassThrough saw %v, want the GETs and no CONNECT", got)
	}
}

// TestMITMPythonRequestsWire drives a tunnel as urllib3 does: CONNECT
// over HTTP/1.0 without a single header, TLS with no SNI (the host is an
// IP address), then several requests with headers and body in separate
// writes.
func TestMITMPythonRequestsWire(t *testing.T) {
	store := openStore(t)
	rc := newReceiver(t, nil, true)
	ca := newCA(t)
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig, UpstreamTLSConfig: rc.tlsConfig()})
	u, _ := url.Parse(rc.URL)

	raw := connect(t, tp.Addr, u.Host)
	tc := trusting(ca.Certificate())
	tc.ServerName = u.Hostname()
	tc.NextProtos = []string{"http/1.1"}
	conn := tls.Client(raw.Conn, tc)
	if err := conn.Handshake(); err != nil {
		t.Fatalf("TLS handshake inside the tunnel: %v", err)
	}
	peer := conn.ConnectionState().PeerCertificates[0]
	if len(peer.IPAddresses) != 1 || peer.IPAddresses[0].String() != u.Hostname() {
		t.Errorf("leaf for %s has IP SANs %v, DNS SANs %v", u.Hostname(), peer.IPAddresses, peer.DNSNames)
	}
	c := &rawConn{Conn: conn, br: bufio.NewReader(conn)}
	for i := range 3 {
		resp, body := c.send(t, http.MethodPost,
			"POST /hooks/py HTTP/1.1\r\nHost: "+u.Host+"\r\nUser-Agent: python-requests/2.28.1\r\nAccept-Encoding: gzip, deflate\r\n"+
				"Accept: */*\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(hookBody))+"\r\n\r\n",
			hookBody)
		assertAccepted(t, resp, body)
		resp, body = c.send(t, http.MethodGet, "GET /get HTTP/1.1\r\nHost: "+u.Host+"\r\nConnection: keep-alive\r\n\r\n")
		if resp.StatusCode != http.StatusTeapot || string(body) != "receiver says hi to GET" {
			t.Fatalf("round %d: GET %d %q", i, resp.StatusCode, body)
		}
	}
	hooks := storedHooks(t, store)
	if len(hooks) != 3 {
		t.Fatalf("stored %d hooks, want 3", len(hooks))
	}
	if want := "https://" + u.Host + "/hooks/py"; hooks[0].Target != want {
		t.Errorf("target %q, want %q", hooks[0].Target, want)
	}
	if ua := hooks[0].Header.Get("User-Agent"); ua != "python-requests/2.28.1" {
		t.Errorf("stored User-Agent %q", ua)
	}
}

// TestMITMHostsSelectsWhatIsIntercepted: a CONNECT to a host outside
// MITMHosts is relayed byte for byte, so the client meets the receiver's
// own certificate and nothing is captured.
func TestMITMHostsSelectsWhatIsIntercepted(t *testing.T) {
	store := &fakeStore{}
	rc := newReceiver(t, nil, true)
	ca := newCA(t)
	passed := new(passLog)
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig, MITMHosts: []string{"hooks.example", "*.hooks.example"}, OnPassThrough: passed.record})

	// Trusting only the receiver's certificate works only if the TLS is
	// the receiver's.
	client := clientVia(t, tp.URL, rc.tlsConfig())
	resp, body := postJSON(t, client, rc.URL+"/hook", "application/json", hookBody)
	if resp.StatusCode != http.StatusTeapot || string(body) != "receiver says hi to POST" {
		t.Fatalf("relayed tunnel: %d %q, want the receiver's answer", resp.StatusCode, body)
	}
	if !resp.TLS.PeerCertificates[0].Equal(rc.Certificate()) {
		t.Errorf("client saw a certificate that is not the receiver's")
	}
	if store.putCount() != 0 {
		t.Errorf("a hook in a relayed tunnel was captured")
	}
	if got := passed.get(); !slices.Equal(got, []string{"CONNECT"}) {
		t.Errorf("OnPassThrough saw %v, want [CONNECT]", got)
	}

	// A selected host is intercepted; a hook needs no receiver at all.
	client = clientVia(t, tp.URL, trusting(ca.Certificate()))
	for _, host := range []string{"hooks.example", "a.hooks.example:8443"} {
		resp, body = postJSON(t, client, "https://"+host+"/t", "application/json", hookBody)
		assertAccepted(t, resp, body)
		leaf := resp.TLS.PeerCertificates[0]
		if err := leaf.VerifyHostname(strings.Split(host, ":")[0]); err != nil {
			t.Errorf("leaf for %s: %v", host, err)
		}
	}
}

// TestMITMUpstreamErrorIs502: inside an intercepted tunnel, a receiver
// that cannot be reached or whose certificate is not trusted gets the
// app a 502 with the reason, not a dropped connection; the tunnel stays
// usable.
func TestMITMUpstreamErrorIs502(t *testing.T) {
	rc := newReceiver(t, nil, true)
	ca := newCA(t)
	// No UpstreamTLSConfig: the receiver's self-signed certificate is not
	// among the system roots.
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig})
	client := clientVia(t, tp.URL, trusting(ca.Certificate()))

	resp, body := do(t, client, mustRequest(t, http.MethodGet, rc.URL+"/untrusted", nil))
	assertJSONError(t, resp, body, http.StatusBadGateway)
	if !strings.Contains(string(body), "certificate") {
		t.Errorf("502 body %s does not say the certificate is the problem", body)
	}
	if reqs := rc.requests(); len(reqs) != 0 {
		t.Errorf("a request reached a receiver whose certificate failed verification")
	}
	// Two requests for one unreachable host: the second goes through the
	// tunnel of the first, which a 502 does not end.
	down := "https://" + closedAddr(t) + "/down"
	for range 2 {
		resp, body = do(t, client, mustRequest(t, http.MethodGet, down, nil))
		assertJSONError(t, resp, body, http.StatusBadGateway)
	}
	if n := tp.listener.accepts.Load(); n != 2 {
		t.Errorf("%d client connections, want 2 (one tunnel per host): a 502 should not end the tunnel", n)
	}
}

// TestMITMMisdirectedRequest: a request inside a tunnel for another host
// than the CONNECT's is refused, not sent on.
func TestMITMMisdirectedRequest(t *testing.T) {
	ca := newCA(t)
	upstream := &recordingTransport{}
	store := &fakeStore{}
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig, Transport: upstream})
	c := intercepted(t, tp, ca, "hooks.example:443")
	for _, host := range []string{"other.example", "hooks.example:444"} {
		resp, body := c.send(t, http.MethodPost, "POST /t HTTP/1.1\r\nHost: "+host+"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		assertJSONError(t, resp, body, http.StatusMisdirectedRequest)
	}
	resp, body := c.send(t, http.MethodPost, "POST /t HTTP/1.1\r\nHost: HOOKS.example:443\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	assertAccepted(t, resp, body)
	if upstream.count() != 0 || store.putCount() != 1 {
		t.Errorf("upstream got %d requests, store %d puts; want 0 and 1", upstream.count(), store.putCount())
	}
}

// TestMITMCertificateError: when no certificate can be had for the host,
// the tunnel ends with a 502 and a log line, and the proxy goes on.
func TestMITMCertificateError(t *testing.T) {
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: func(string) (*tls.Config, error) {
		return nil, errors.New("no leaf today")
	}})
	raw := connect(t, tp.Addr, "hooks.example:443")
	conn := tls.Client(raw.Conn, &tls.Config{ServerName: "hooks.example"})
	if err := conn.Handshake(); err == nil {
		t.Fatal("handshake succeeded without a certificate")
	}
	if logs := tp.logs.String(); !strings.Contains(logs, "intercept failed") || !strings.Contains(logs, "no leaf today") {
		t.Errorf("logs do not tell why:\n%s", logs)
	}
	resp, body := postJSON(t, tp.client(t), "http://receiver.example/t", "application/json", hookBody)
	assertAccepted(t, resp, body)
}

func TestProxyAuth(t *testing.T) {
	store := openStore(t)
	rc := newReceiver(t, nil, true)
	ca := newCA(t)
	tp := startProxy(t, Options{Store: store, ProxyAuth: "app:s3cret:with-colon", TLSConfig: ca.TLSConfig,
		MITMHosts: []string{"hooks.example"}, UpstreamTLSConfig: rc.tlsConfig()})
	withCreds := func(user, pw string) *url.URL {
		u := *tp.URL
		u.User = url.UserPassword(user, pw)
		return &u
	}

	for name, proxyURL := range map[string]*url.URL{
		"none":         tp.URL,
		"wrong":        withCreds("app", "nope"),
		"wrong user":   withCreds("ap", "s3cret:with-colon"),
		"longer":       withCreds("app", "s3cret:with-colon!"),
		"empty secret": withCreds("app", ""),
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := postJSON(t, clientVia(t, proxyURL, nil), "http://receiver.example/t", "application/json", hookBody)
			assertJSONError(t, resp, body, http.StatusProxyAuthRequired)
			if got := resp.Header.Get("Proxy-Authenticate"); got != `Basic realm="hookproxy"` {
				t.Errorf("Proxy-Authenticate = %q", got)
			}
			// Go's transport reports a refused CONNECT as an error
			// naming the status.
			_, err := clientVia(t, proxyURL, trusting(ca.Certificate())).Get("https://hooks.example/x")
			if err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
				t.Errorf("CONNECT without valid credentials: %v, want a 407", err)
			}
		})
	}
	if store.Stats().PendingHooks != 0 {
		t.Fatalf("a refused request was captured")
	}

	good := withCreds("app", "s3cret:with-colon")
	resp, body := postJSON(t, clientVia(t, good, nil), "http://receiver.example/t", "application/json", hookBody)
	assertAccepted(t, resp, body)
	// Intercepted: the credentials on the CONNECT cover the requests
	// inside the tunnel, which carry none.
	mitmClient := clientVia(t, good, trusting(ca.Certificate()))
	for range 2 {
		resp, body = postJSON(t, mitmClient, "https://hooks.example/t", "application/json", hookBody)
		assertAccepted(t, resp, body)
	}
	// Relayed.
	resp, body = do(t, clientVia(t, good, rc.tlsConfig()), mustRequest(t, http.MethodGet, rc.URL+"/relayed", nil))
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("relayed tunnel with credentials: %d %s", resp.StatusCode, body)
	}
	for _, h := range storedHooks(t, store) {
		if h.Header.Get("Proxy-Authorization") != "" {
			t.Errorf("hook stored with the proxy credentials")
		}
	}
	if logs := tp.logs.String(); strings.Contains(logs, "s3cret") {
		t.Errorf("the secret reached the logs")
	}
}

func TestProxyAuthValidation(t *testing.T) {
	for _, v := range []string{"nocolon", ":pw", "app:"} {
		if _, err := New(Options{Store: &fakeStore{}, ProxyAuth: v}); err == nil || strings.Contains(err.Error(), v) {
			t.Errorf("ProxyAuth %q: err = %v, want a refusal that does not repeat the value", v, err)
		}
	}
	if _, err := New(Options{Store: &fakeStore{}, MITMHosts: []string{"a.example:443"}}); err == nil || !strings.Contains(err.Error(), "MITM host") {
		t.Errorf("MITMHosts with a port: err = %v", err)
	}
}

// TestShutdownWaitsForInFlightMITM: a capture in progress inside an
// intercepted tunnel gets its 202 before Shutdown closes the tunnel, and
// that answer tells the client the tunnel ends.
func TestShutdownWaitsForInFlightMITM(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	ca := newCA(t)
	tp := startProxy(t, Options{Store: &blockingStore{entered: entered, release: release}, TLSConfig: ca.TLSConfig})
	c := intercepted(t, tp, ca, "hooks.example:443")
	type result struct {
		resp *http.Response
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, err := io.WriteString(c, "POST /t HTTP/1.1\r\nHost: hooks.example\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		if err != nil {
			done <- result{err: err}
			return
		}
		resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodPost})
		if err != nil {
			done <- result{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		done <- result{resp, body, err}
	}()
	recv(t, entered, "the capture")
	// The server of tunnels calls this once its Shutdown has begun, just
	// before it waits for the requests in progress.
	tunnelsShutting := make(chan struct{})
	var once sync.Once
	tp.tunnels.RegisterOnShutdown(func() { once.Do(func() { close(tunnelsShutting) }) })
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		shut <- tp.Shutdown(ctx)
	}()
	// Shutdown marks tunnels as ending before it closes the listener,
	// then waits for the request in the tunnel.
	recv(t, tp.listener.closed, "the listener's close")
	recv(t, tunnelsShutting, "the shutdown of the tunnels")
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a capture in a tunnel was in progress", err)
	default:
	}
	close(release)
	r := recv(t, done, "the answer")
	if r.err != nil {
		t.Fatalf("in-flight capture in a tunnel: %v", r.err)
	}
	assertAccepted(t, r.resp, r.body)
	if !r.resp.Close {
		t.Errorf("answer during shutdown does not close the tunnel")
	}
	if err := recv(t, shut, "Shutdown"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestMITMMalformedHostIs400: inside an intercepted tunnel the target
// URL is built from the Host header, so a Host that is not a host must
// not become part of the recorded URL: "hooks.example#" would turn the
// path into a fragment and the hook would go to "/", "hooks.example/x?"
// would put another path in front of the app's. It gets net/http's 400
// with Connection: close, as on the plain path.
func TestMITMMalformedHostIs400(t *testing.T) {
	ca := newCA(t)
	store := openStore(t)
	upstream := &recordingTransport{}
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig, Transport: upstream})
	for _, host := range []string{"hooks.example#", "hooks.example/other?"} {
		c := intercepted(t, tp, ca, "hooks.example:443")
		resp, body := c.send(t, http.MethodPost, "POST /t HTTP/1.1\r\nHost: "+host+"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		if resp.StatusCode != http.StatusBadRequest || !resp.Close {
			t.Errorf("Host %q: %d (Connection: close %v) %s, want 400 and a close", host, resp.StatusCode, resp.Close, body)
		}
	}
	for _, h := range storedHooks(t, store) {
		t.Errorf("stored a hook for %q; the app posted to https://hooks.example/t", h.Target)
	}
	// A well-formed request is captured as before.
	c := intercepted(t, tp, ca, "hooks.example:443")
	resp, body := c.send(t, http.MethodPost, "POST /t HTTP/1.1\r\nHost: hooks.example\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	assertAccepted(t, resp, body)
	if hooks := storedHooks(t, store); len(hooks) != 1 || hooks[0].Target != "https://hooks.example/t" {
		t.Errorf("stored %+v, want one hook for https://hooks.example/t", hooks)
	}
	if upstream.count() != 0 {
		t.Errorf("upstream got %d requests, want none", upstream.count())
	}
}

// TestMITMRefusesWhatItCannotRelay: inside an intercepted tunnel a
// CONNECT gets 400 and a request of another HTTP version 505 (net/http's,
// as on the plain path), each with Connection: close; goproxy passed both
// on, the CONNECT as "CONNECT //host:port" and HTTP/3.0 as HTTP/1.1.
func TestMITMRefusesWhatItCannotRelay(t *testing.T) {
	ca := newCA(t)
	upstream := &recordingTransport{}
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, Transport: upstream})
	for _, tt := range []struct {
		method, request string
		status          int
	}{
		{http.MethodConnect, "CONNECT hooks.example:443 HTTP/1.1\r\nHost: hooks.example:443\r\n\r\n", http.StatusBadRequest},
		{http.MethodGet, "GET /t HTTP/3.0\r\nHost: hooks.example\r\n\r\n", http.StatusHTTPVersionNotSupported},
		{http.MethodGet, "GET /t HTTP/0.9\r\nHost: hooks.example\r\n\r\n", http.StatusHTTPVersionNotSupported},
	} {
		c := intercepted(t, tp, ca, "hooks.example:443")
		resp, body := c.send(t, tt.method, tt.request)
		if tt.method == http.MethodConnect {
			assertJSONError(t, resp, body, tt.status)
		} else if resp.StatusCode != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.request, resp.StatusCode, body, tt.status)
		}
		if !resp.Close {
			t.Errorf("%s: the answer keeps the tunnel open", tt.request)
		}
	}
	if upstream.count() != 0 {
		t.Errorf("upstream got %d requests, want none", upstream.count())
	}
}

// TestMITMOptionsAsterisk: "OPTIONS *" (a request for the server as a
// whole, RFC 9112 3.2.4) inside an intercepted tunnel is passed through
// as "OPTIONS *", as it is on the plain path; goproxy glues the "*" onto
// the host ("https://hooks.example*").
func TestMITMOptionsAsterisk(t *testing.T) {
	ca := newCA(t)
	type seen struct{ host, uri string }
	got := make(chan seen, 1)
	upstream := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got <- seen{r.URL.Host, r.URL.RequestURI()}
		return &http.Response{StatusCode: http.StatusNoContent, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Allow": {"POST"}}, Body: http.NoBody, Request: r}, nil
	})
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, Transport: upstream})
	c := intercepted(t, tp, ca, "hooks.example:443")
	resp, body := c.send(t, http.MethodOptions, "OPTIONS * HTTP/1.1\r\nHost: hooks.example\r\n\r\n")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("OPTIONS * in a tunnel: %d %v %s, want the receiver's 204", resp.StatusCode, resp.Header, body)
	}
	if s := recv(t, got, "the upstream request"); s.host != "hooks.example" || s.uri != "*" {
		t.Errorf("upstream got host %q, request target %q; want hooks.example and *", s.host, s.uri)
	}
}

// TestMITMPythonIPv6HostHeader: python's http.client before 3.11.9
// (CPython gh-100985, Debian bookworm's 3.11.2 among them) doubles the
// brackets of an IPv6 literal in the Host of a request inside a tunnel
// (CONNECT [::1]:8443, then Host: [[::1]]:8443). The hook is still
// stored for https://[::1]:8443/..., a URL the sender can deliver to,
// and a request passed on goes to that address too, with that Host: a
// receiver that checks it (Django's ALLOWED_HOSTS) refuses the doubled
// brackets with a 400.
func TestMITMPythonIPv6HostHeader(t *testing.T) {
	ca := newCA(t)
	upstream := &recordingTransport{}
	store := openStore(t)
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig, Transport: upstream})
	for _, tc := range []struct{ connect, host, want string }{
		{"[::1]:8443", "[[::1]]:8443", "https://[::1]:8443"},
		{"[::1]:443", "[[::1]]", "https://[::1]"},
	} {
		c := intercepted(t, tp, ca, tc.connect)
		resp, body := c.send(t, http.MethodPost, "POST /hooks/v6?a=1 HTTP/1.1\r\nHost: "+tc.host+
			"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		assertAccepted(t, resp, body)
		resp, _ = c.send(t, http.MethodGet, "GET /get HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
		if resp.StatusCode != statusPassedThrough {
			t.Errorf("Host %s: GET answered %d, want it passed on", tc.host, resp.StatusCode)
		}
	}
	var targets []string // two targets: their order in the store is not defined
	for _, h := range storedHooks(t, store) {
		targets = append(targets, h.Target)
	}
	slices.Sort(targets)
	if want := []string{"https://[::1]/hooks/v6?a=1", "https://[::1]:8443/hooks/v6?a=1"}; !slices.Equal(targets, want) {
		t.Errorf("stored targets %q, want %q", targets, want)
	}
	upstream.mu.Lock()
	defer upstream.mu.Unlock()
	for i, want := range []struct{ uri, host string }{
		{"https://[::1]:8443/get", "[::1]:8443"},
		{"https://[::1]/get", "[::1]"},
	} {
		if i >= len(upstream.reqs) || upstream.reqs[i].URI != want.uri || upstream.reqs[i].Host != want.host {
			t.Errorf("passed-on request %d: %+v, want %s with Host %s", i, upstream.reqs, want.uri, want.host)
		}
	}
}
