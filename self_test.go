package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOwnListenersUnreachable: the admin API listens on loopback without
// a token, which keeps the network out of it; the proxy port must not let
// the network in again. A request passed through the proxy, a relayed
// CONNECT tunnel and a delivery (loopback allowed) to hookproxy's own
// listeners are refused before a packet is sent.
func TestOwnListenersUnreachable(t *testing.T) {
	hp := startHookproxy(t, map[string]string{
		// Tunnels to other hosts are relayed byte for byte.
		"MITM_HOSTS": "hooks.example",
	})
	adminAddr := hp.logs.field("admin listening", "admin_addr")
	adminURL := "http://" + adminAddr
	c := proxyClient(t, hp.proxyURL)

	// A purge passed through to the admin API.
	for _, u := range []string{adminURL, strings.Replace(adminURL, "127.0.0.1", "localhost", 1), hp.proxyURL} {
		req, err := http.NewRequest(http.MethodDelete, u+"/api/dead-letters?all=true", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "own listener") {
			t.Errorf("DELETE %s through the proxy: %d %s, want 502 naming hookproxy's own listener", u, resp.StatusCode, body)
		}
		if resp.Header.Get("X-Hookproxy-Admin") != "" {
			t.Errorf("DELETE %s through the proxy reached the admin API", u)
		}
	}

	// A relayed CONNECT tunnel to the admin API.
	pc, err := net.Dial("tcp", strings.TrimPrefix(hp.proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_ = pc.SetDeadline(time.Now().Add(waitLimit))
	fmt.Fprintf(pc, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", adminAddr, adminAddr)
	resp, err := http.ReadResponse(bufio.NewReader(pc), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("CONNECT %s through the proxy: %d, want 502", adminAddr, resp.StatusCode)
	}

	// A subscriber URL naming the admin API, delivered with loopback
	// allowed: dead-lettered as blocked.
	postHooks(t, c, []clientRequest{{URL: adminURL + "/api/targets/1/clear-gone", Body: `{"hook":{"id":1}}`}})
	waitLogs(t, hp.logs, "batch given up", 1)
	if got := hp.logs.field("batch given up", "reason"); got != "blocked" {
		t.Errorf("delivery to the admin API: given up with reason %q, want blocked\n%s", got, hp.logs.String())
	}
}
