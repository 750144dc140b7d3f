package egress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// These tests resolve names through fakeDNS, a DNS server on loopback UDP
// that answers from a fixed table, and connect only to loopback
// listeners. No test sends anything to real DNS or to any address outside
// 127.0.0.0/8.

// hookHost is the name targets use; the Go resolver may also ask for it
// with the system's search domains appended, which fakeDNS answers with
// NXDOMAIN.
const hookHost = "hook.hookproxy.test"

type fakeDNS struct {
	conn    net.PacketConn
	answers map[string][]netip.Addr // by lowercase FQDN
	wg      sync.WaitGroup
}

// newFakeDNS serves answers (host name to addresses) until the test ends.
func newFakeDNS(tb testing.TB, answers map[string][]netip.Addr) *fakeDNS {
	tb.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f := &fakeDNS{conn: conn, answers: make(map[string][]netip.Addr)}
	for name, addrs := range answers {
		f.answers[strings.ToLower(name)+"."] = addrs
	}
	f.wg.Go(f.serve)
	tb.Cleanup(func() {
		conn.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := f.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		resp, err := f.answer(buf[:n])
		if err != nil {
			continue // not a query we understand; the resolver times out
		}
		f.conn.WriteTo(resp, from)
	}
}

func (f *fakeDNS) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	addrs, known := f.answers[strings.ToLower(q.Name.String())]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET}
	for _, a := range addrs {
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			err = b.AResource(rr, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			err = b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// resolver sends every query to f, whatever name server the system
// configuration names.
func (f *fakeDNS) resolver() *net.Resolver {
	addr := f.conn.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

// loopbackOnly is the base dialer's Control in these tests: a second
// fence that refuses anything outside loopback even if the guard under
// test wrongly lets it through, and a record of what the guard passed on.
type loopbackOnly struct {
	mu     sync.Mutex
	passed []string
}

func (l *loopbackOnly) control(_, address string, _ syscall.RawConn) error {
	l.mu.Lock()
	l.passed = append(l.passed, address)
	l.mu.Unlock()
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return errors.New("test fence: refusing non-loopback " + address)
	}
	return nil
}

func (l *loopbackOnly) addresses() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.passed...)
}

// listenLoopback returns a TCP listener on 127.0.0.1 closed when the
// test ends.
func listenLoopback(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// nextAccepted returns the remote address of the next connection ln
// accepts, closing it.
func nextAccepted(tb testing.TB, ln net.Listener) string {
	tb.Helper()
	c, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	return c.RemoteAddr().String()
}

// assertNothingAccepted shows, without waiting for a timeout, that no
// connection reached ln before this call: it connects a sentinel of its
// own and checks that the first connection in ln's (FIFO) accept queue is
// the sentinel.
func assertNothingAccepted(tb testing.TB, ln net.Listener) {
	tb.Helper()
	sentinel, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	defer sentinel.Close()
	if got, want := nextAccepted(tb, ln), sentinel.LocalAddr().String(); got != want {
		tb.Errorf("listener accepted a connection from %s before the sentinel %s", got, want)
	}
}

func port(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

func TestDialRefusesResolvedLoopback(t *testing.T) {
	dns := newFakeDNS(t, map[string][]netip.Addr{hookHost: {netip.MustParseAddr("127.0.0.1")}})
	ln := listenLoopback(t)
	fence := &loopbackOnly{}
	d := (&Guard{}).Dialer(&net.Dialer{Resolver: dns.resolver(), Control: fence.control})

	c, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort(hookHost, port(ln)))
	if err == nil {
		c.Close()
		t.Fatal("dial to a name resolving to 127.0.0.1 succeeded")
	}
	checkBlocked(t, err, netip.MustParseAddr("127.0.0.1"), Loopback)
	if got := fence.addresses(); len(got) != 0 {
		t.Errorf("guard passed %v on to the base dialer", got)
	}
	assertNothingAccepted(t, ln)
}

func TestDialAllowsListedLoopback(t *testing.T) {
	dns := newFakeDNS(t, map[string][]netip.Addr{hookHost: {netip.MustParseAddr("127.0.0.1")}})
	ln := listenLoopback(t)
	fence := &loopbackOnly{}
	g := &Guard{Allow: prefixes(t, "127.0.0.0/8")}
	d := g.Dialer(&net.Dialer{Resolver: dns.resolver(), Control: fence.control})

	c, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort(hookHost, port(ln)))
	if err != nil {
		t.Fatalf("dial with 127.0.0.0/8 allowed: %v", err)
	}
	defer c.Close()
	if got, want := nextAccepted(t, ln), c.LocalAddr().String(); got != want {
		t.Errorf("listener accepted %s, want the guarded connection %s", got, want)
	}
}

// TestDialSkipsRefusedAnswers resolves a name to two loopback addresses
// of which only one is allowed: the dialer tries both, and only the
// allowed one ever gets past the guard.
func TestDialSkipsRefusedAnswers(t *testing.T) {
	dns := newFakeDNS(t, map[string][]netip.Addr{hookHost: {
		netip.MustParseAddr("127.0.0.2"),
		netip.MustParseAddr("127.0.0.1"),
	}})
	ln := listenLoopback(t)
	fence := &loopbackOnly{}
	g := &Guard{Allow: prefixes(t, "127.0.0.1")}
	d := g.Dialer(&net.Dialer{Resolver: dns.resolver(), Control: fence.control})

	addr := net.JoinHostPort(hookHost, port(ln))
	c, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if got, want := fence.addresses(), []string{net.JoinHostPort("127.0.0.1", port(ln))}; !slices.Equal(got, want) {
		t.Errorf("guard passed %v on to the base dialer, want %v", got, want)
	}
	if got, want := c.RemoteAddr().String(), ln.Addr().String(); got != want {
		t.Errorf("connected to %s, want %s", got, want)
	}
}

// TestHTTPClientBlocked wires the guard into an http.Transport as the
// sender does: the request fails with ErrBlocked reachable through the
// client's error, and the receiver sees nothing.
func TestHTTPClientBlocked(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	defer srv.Close()
	_, srvPort, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	dns := newFakeDNS(t, map[string][]netip.Addr{hookHost: {netip.MustParseAddr("127.0.0.1")}})
	fence := &loopbackOnly{}
	url := "http://" + net.JoinHostPort(hookHost, srvPort) + "/hook"

	client := func(g *Guard) *http.Client {
		d := g.Dialer(&net.Dialer{Resolver: dns.resolver(), Control: fence.control})
		tr := &http.Transport{Proxy: nil, DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}

	resp, err := client(&Guard{}).Post(url, "application/json", strings.NewReader(`{}`))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("POST %s: status %s, want a blocked error", url, resp.Status)
	}
	checkBlocked(t, err, netip.MustParseAddr("127.0.0.1"), Loopback)
	if n := hits.Load(); n != 0 {
		t.Errorf("receiver got %d requests", n)
	}

	resp, err = client(&Guard{AllowPrivate: true}).Post(url, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("POST %s with AllowPrivate: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := hits.Load(); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
}

// TestDialMixedAnswersDownIsNotBlocked: a name resolves to a refused
// address and to an allowed one whose receiver is down. The allowed
// address was dialled and failed, a transient failure worth a retry; the
// dial's error must not say ErrBlocked, which makes the sender give the
// batch up at once ("blocked", never retried).
func TestDialMixedAnswersDownIsNotBlocked(t *testing.T) {
	ln := listenLoopback(t)
	addr := net.JoinHostPort(hookHost, port(ln))
	ln.Close() // the allowed receiver is down: connection refused
	dns := newFakeDNS(t, map[string][]netip.Addr{hookHost: {
		netip.MustParseAddr("127.0.0.2"),
		netip.MustParseAddr("127.0.0.1"),
	}})
	fence := &loopbackOnly{}
	g := &Guard{Allow: prefixes(t, "127.0.0.1")}
	dial := g.DialContext(&net.Dialer{Resolver: dns.resolver(), Control: fence.control})

	c, err := dial(t.Context(), "tcp", addr)
	if err == nil {
		c.Close()
		t.Fatal("dial succeeded")
	}
	if len(fence.addresses()) != 1 {
		t.Fatalf("guard passed %v on, want the allowed address", fence.addresses())
	}
	if errors.Is(err, ErrBlocked) {
		t.Errorf("dial error %v is ErrBlocked, though the allowed address was tried and refused the connection", err)
	}
}

// TestDialContextAllRefusedIsBlocked: with every answer refused, the
// dial stays ErrBlocked and nothing gets past the guard.
func TestDialContextAllRefusedIsBlocked(t *testing.T) {
	ln := listenLoopback(t)
	dns := newFakeDNS(t, map[string][]netip.Addr{hookHost: {
		netip.MustParseAddr("127.0.0.2"),
		netip.MustParseAddr("127.0.0.1"),
	}})
	fence := &loopbackOnly{}
	dial := (&Guard{}).DialContext(&net.Dialer{Resolver: dns.resolver(), Control: fence.control})
	c, err := dial(t.Context(), "tcp", net.JoinHostPort(hookHost, port(ln)))
	if err == nil {
		c.Close()
		t.Fatal("dial succeeded")
	}
	checkBlocked(t, err, netip.MustParseAddr("127.0.0.2"), Loopback)
	if got := fence.addresses(); len(got) != 0 {
		t.Errorf("guard passed %v on", got)
	}
	assertNothingAccepted(t, ln)
}
