package admin

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"hookproxy/buffer"
)

// TestWebPagesCannotDriveTheAPI: a web page in a browser on the admin's
// host must not change anything (a cross-site form post reaches a
// loopback listener without asking), nor, with no token, read through
// DNS rebinding (its own domain resolving to 127.0.0.1, or to a port
// published there, where the request arrives on another interface). The
// command line, curl, and names such as localhost or a compose service
// keep working.
func TestWebPagesCannotDriveTheAPI(t *testing.T) {
	for _, tt := range []struct {
		name, method, path string
		header             map[string]string
		token              string // the server's token, sent by the request too
		want               int
	}{
		{"cross-site form post", "POST", "/api/dead-letters/replay?all=true", map[string]string{"Origin": "http://evil.example"}, "", http.StatusForbidden},
		{"cross-site by fetch metadata", "POST", "/api/dead-letters/replay?all=true", map[string]string{"Sec-Fetch-Site": "cross-site"}, "", http.StatusForbidden},
		{"opaque origin", "DELETE", "/api/dead-letters?all=true", map[string]string{"Origin": "null"}, "", http.StatusForbidden},
		{"rebinding read", "GET", "/api/dead-letters", map[string]string{"Host": "evil.example:9090"}, "", http.StatusForbidden},
		{"rebinding change", "POST", "/api/dead-letters/replay?all=true", map[string]string{"Host": "evil.example"}, "", http.StatusForbidden},
		{"the command line", "POST", "/api/dead-letters/replay?all=true", nil, "", http.StatusOK},
		{"a page of the admin's own origin", "POST", "/api/dead-letters/replay?all=true", map[string]string{"Origin": "SELF"}, "", http.StatusOK},
		{"by the name localhost", "GET", "/api/dead-letters", map[string]string{"Host": "localhost:9090"}, "", http.StatusOK},
		{"another name with a token", "GET", "/api/dead-letters", map[string]string{"Host": "hookproxy.internal"}, "t0ken", http.StatusOK},
		{"a compose service name", "GET", "/api/dead-letters", map[string]string{"Host": "hookproxy:9090"}, "", http.StatusOK},
		{"healthz by any name", "GET", "/healthz", map[string]string{"Host": "evil.example"}, "", http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			st := openStore(t, clk)
			put(t, st, "http://a.test/hook", `{"n":1}`)
			kill(t, st, clk, "http://a.test/hook", 0, "status", 400)
			_, base := serve(t, Options{Store: st, Token: tt.token, Now: clk.Now})
			req, err := http.NewRequest(tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				if v == "SELF" {
					v = base
				}
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
			}
			dead, err := st.ListDeadLetters(buffer.DeadLetterFilter{}, false)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == http.StatusForbidden && len(dead) != 1 {
				t.Errorf("a refused request changed the dead letters: %d left, want 1", len(dead))
			}
		})
	}
}

// TestRebindingThroughAPublishedPort: compose publishes the admin port
// on the host's 127.0.0.1, and requests reach the listener on the
// container's bridge address. A page rebound to 127.0.0.1 still names
// its own domain, and is refused.
func TestRebindingThroughAPublishedPort(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	put(t, st, "http://a.test/hook", `{"n":1}`)
	kill(t, st, clk, "http://a.test/hook", 1, "status", 400)
	srv, err := New(Options{Store: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	bridge := &net.TCPAddr{IP: net.ParseIP("172.18.0.2"), Port: 9090}
	for _, method := range []string{"GET", "DELETE"} {
		req := httptest.NewRequest(method, "http://rebind.attacker.example:9090/api/dead-letters?all=true", nil)
		req.Header.Set("Origin", "http://rebind.attacker.example:9090")
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.Addr(bridge)))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s by a rebound page through the published port: %d, want 403", method, rec.Code)
		}
	}
	if dead, err := st.ListDeadLetters(buffer.DeadLetterFilter{}, false); err != nil || len(dead) != 1 {
		t.Errorf("dead letters after the refused requests: %d, %v; want 1", len(dead), err)
	}
}

// TestBrowserCredentialsAndPreflights: the token counts only in an
// Authorization: Bearer header, which a page cannot make a browser send
// to another site; a cookie, a query parameter or Basic credentials
// holding it (which a browser can send on its own) do not. A preflight
// by a page of another site is refused, and no answer allows a
// cross-origin read.
func TestBrowserCredentialsAndPreflights(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	put(t, st, "http://a.test/hook", `{"n":1}`)
	kill(t, st, clk, "http://a.test/hook", 0, "status", 400)
	const token = "t0ken"
	for _, tt := range []struct {
		name, method, path string
		header             map[string]string
		want               int
	}{
		{"token in a cookie", "DELETE", "/api/dead-letters?all=true", map[string]string{"Cookie": "token=" + token}, http.StatusUnauthorized},
		{"token as a query parameter", "DELETE", "/api/dead-letters?all=true&token=" + token, nil, http.StatusUnauthorized},
		{"token as Basic credentials", "DELETE", "/api/dead-letters?all=true", map[string]string{"Authorization": "Basic OnQwa2Vu"}, http.StatusUnauthorized},
		{"preflight", "OPTIONS", "/api/dead-letters?all=true", map[string]string{
			"Origin": "http://evil.example", "Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "authorization",
		}, http.StatusUnauthorized},
		{"preflight with the token", "OPTIONS", "/api/dead-letters?all=true", map[string]string{
			"Origin": "http://evil.example", "Access-Control-Request-Method": "DELETE", "Authorization": "Bearer " + token,
		}, http.StatusForbidden},
		{"read by another origin with the token", "GET", "/api/dead-letters", map[string]string{
			"Origin": "http://evil.example", "Authorization": "Bearer " + token,
		}, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, base := serve(t, Options{Store: st, Token: token, Now: clk.Now})
			req, err := http.NewRequest(tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
			}
			for k := range resp.Header {
				if strings.HasPrefix(k, "Access-Control-") {
					t.Errorf("%s %s: answer with %s: %s", tt.method, tt.path, k, resp.Header.Get(k))
				}
			}
		})
	}
	if dead, err := st.ListDeadLetters(buffer.DeadLetterFilter{}, false); err != nil || len(dead) != 1 {
		t.Errorf("dead letters after the refused requests: %d, %v; want 1", len(dead), err)
	}
}
