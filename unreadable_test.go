package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hookproxy/admin"
	"hookproxy/buffer"
)

// unreadableDeadLetters makes a store whose value log lost the body of
// a 70 kB hook (cut short after a clean close, as a damaged disk or a
// careless copy leaves it), and two dead letters: that hook's (reason
// unreadable, made by the claim that met it) and a small hook's given up
// with a 400. It returns the store and the two dead letters' ids.
func unreadableDeadLetters(tb testing.TB) (store *buffer.Store, unreadable, status string) {
	tb.Helper()
	const target = "http://a.test/h"
	dir := tb.TempDir()
	open := func() *buffer.Store {
		tb.Helper()
		st, err := buffer.Open(buffer.Options{Dir: dir, GCInterval: -1})
		if err != nil {
			tb.Fatal(err)
		}
		return st
	}
	store = open()
	big := `{"pk":0,"pad":"` + strings.Repeat("x", 70<<10) + `"}`
	for _, body := range []string{big, `{"pk":1}`} {
		if err := store.Put(context.Background(), &buffer.Hook{Target: target, Method: "POST", Body: []byte(body)}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		tb.Fatal(err)
	}
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil || len(vlogs) != 1 {
		tb.Fatalf("value-log files %v, %v", vlogs, err)
	}
	if err := os.Truncate(vlogs[0], 1000); err != nil {
		tb.Fatal(err)
	}
	store = open()
	tb.Cleanup(func() { store.Close() })
	sts, err := store.Targets()
	if err != nil || len(sts) != 1 {
		tb.Fatalf("targets %+v, %v", sts, err)
	}
	b, err := store.Claim(sts[0].ID, 0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := store.GiveUp(sts[0].ID, b.ID, "status", buffer.Failure{Status: 400, Error: "HTTP 400 Bad Request"}, buffer.NextClaim{}); err != nil {
		tb.Fatal(err)
	}
	ds, err := store.ListDeadLetters(buffer.DeadLetterFilter{Reason: buffer.ReasonUnreadable}, false)
	if err != nil || len(ds) != 1 {
		tb.Fatalf("unreadable dead letters %+v, %v; want one", ds, err)
	}
	return store, ds[0].ID, b.ID
}

// TestReplayOfUnreadableIsRefused: the dead letter of a hook whose
// record could not be read is listed and purged like any other, and a
// replay refuses it with a clear message: alone, as a failure (exit 1);
// selected with others, which go back all the same, as a note.
func TestReplayOfUnreadableIsRefused(t *testing.T) {
	store, unreadable, status := unreadableDeadLetters(t)
	adminURL := serveAdmin(t, store)

	out, _, err := cliRun(t, adminURL, "dead", "list", "--reason", "unreadable")
	if err != nil || !strings.Contains(out, unreadable) || strings.Contains(out, status) {
		t.Errorf("dead list --reason unreadable: %v\n%s", err, out)
	}
	_, _, err = cliRun(t, adminURL, "dead", "replay", unreadable)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "cannot replay "+unreadable) || !strings.Contains(err.Error(), "purge them") {
		t.Errorf("dead replay %s: %v (exit %d), want exit 1 saying why", unreadable, err, exitCode(err))
	}
	out, _, err = cliRun(t, adminURL, "dead", "replay", "--all")
	want := "replayed 1 dead letter (1 hook): back in their targets' queues; " +
		"not replayed, their hooks could not be read (reason unreadable, purge them): " + unreadable + "\n"
	if err != nil || out != want {
		t.Errorf("dead replay --all: %q, %v; want %q", out, err, want)
	}
	out, _, err = cliRun(t, adminURL, "retry-failed", "--json")
	if res := decode[admin.ReplayResult](t, out); err != nil || res.DeadLetters != 0 || len(res.Unreadable) != 1 || res.Unreadable[0] != unreadable {
		t.Errorf("retry-failed --json: %+v, %v; want the unreadable one refused", res, err)
	}
	if out, _, err := cliRun(t, adminURL, "dead", "purge", unreadable); err != nil || out != "purged 1 dead letter\n" {
		t.Errorf("dead purge %s: %q, %v", unreadable, out, err)
	}
	if n := deadLetterCount(t, adminURL); n != 0 {
		t.Errorf("%d dead letters left, want none", n)
	}
}
