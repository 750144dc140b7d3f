package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestQuotaAnswers507ThenAcceptsAgain: past HOOKPROXY_MAX_PENDING_BYTES a
// capture gets 507 with a JSON reason and nothing accepted is dropped;
// once deliveries free space, captures are accepted again.
func TestQuotaAnswers507ThenAcceptsAgain(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(int) int { <-release; return 200 })
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	reqs := hookRequests(rc.srv.URL+"/quota", 0, 4)
	quota := len(reqs[0].Body) + len(reqs[1].Body)
	hp := startHookproxy(t, map[string]string{"MAX_PENDING_BYTES": itoa(quota), "MAX_BODY_BYTES": itoa(quota)})
	c := proxyClient(t, hp.proxyURL)
	postHooks(t, c, reqs[:2])

	post := func(r clientRequest) (int, string) {
		t.Helper()
		resp, err := c.Post(r.URL, "application/json", strings.NewReader(r.Body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := post(reqs[2])
	var jerr struct {
		Error string `json:"error"`
	}
	if code != http.StatusInsufficientStorage || json.Unmarshal([]byte(body), &jerr) != nil || jerr.Error == "" {
		t.Fatalf("past the quota: %d %s, want 507 with a JSON reason", code, body)
	}

	// The receiver answers; once both hooks are acknowledged there is
	// room. Nothing signals the acknowledgement itself, so poll.
	close(release)
	rc.waitFor(t, "both accepted hooks", func(g []received) bool { return len(g) >= 2 })
	deadline := time.Now().Add(waitLimit)
	for {
		code, body := post(reqs[2])
		if code == http.StatusAccepted {
			break
		}
		if code != http.StatusInsufficientStorage || time.Now().After(deadline) {
			t.Fatalf("after deliveries freed space: %d %s, want 202", code, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := rc.waitFor(t, "the third hook", func(g []received) bool { return len(g) >= 3 })
	for i, want := range []string{reqs[0].Body, reqs[1].Body, reqs[2].Body} {
		if string(got[i].Body) != want {
			t.Errorf("delivery %d = %s, want %s", i, got[i].Body, want)
		}
	}
}
