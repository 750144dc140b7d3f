package admin

import (
	"net/http"
	"testing"

	"hookproxy/buffer"
)

// TestWebPagesCannotDriveTheAPI: a web page in a browser on the admin's
// host must not change anything (a cross-site form post reaches a
// loopback listener without asking), nor, with no token, read through
// DNS rebinding (its own host name resolving to 127.0.0.1). The command
// line, curl, and a name such as localhost keep working.
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
