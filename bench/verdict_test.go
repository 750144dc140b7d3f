package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMarkdownSaysScenarioERunsOnce: runAll runs scenario e once,
// whatever -reps says, so the report must not call its figures (and the
// scale headlines judged on them) medians of -reps repetitions.
func TestMarkdownSaysScenarioERunsOnce(t *testing.T) {
	rep := &report{sections: []section{
		{id: "a", title: "a. x", refNames: []string{"r"}},
		{id: "e", title: "e. Scale", refNames: []string{"empty store"}},
	}}
	var b strings.Builder
	if err := writeMarkdown(&b, rep, 3, ""); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	if strings.Contains(md, "Every figure is the median of 3 repetition(s)") {
		t.Errorf("the report says every figure is the median of 3 repetitions, but scenario e runs once:\n%s",
			md[:min(len(md), 400)])
	}
	if !strings.Contains(md, "runs once") {
		t.Error("the report does not say that scenario e runs once")
	}
}

// TestStalledDeliveryUnderLimitIsAMiss: a hookproxy that dies inside the
// memory cgroup (OOM-killed) before delivering its backlog misses the
// target "all (ratio 1)": the headline must say **no**, not "not
// measured" (with r >= 1 on a count that waitHooks guaranteed, it could
// never say no).
func TestStalledDeliveryUnderLimitIsAMiss(t *testing.T) {
	// The wait gives up after stallTimeout without a delivery.
	defer func(d time.Duration) { stallTimeout = d }(stallTimeout)
	stallTimeout = 500 * time.Millisecond
	dir := t.TempDir()
	// A "hookproxy" that logs its start line and dies without delivering.
	bin := filepath.Join(dir, "fake-hookproxy")
	script := "#!/bin/sh\necho '{\"msg\":\"hookproxy started\",\"proxy_addr\":\"127.0.0.1:1\",\"pending_hooks\":1000000}' >&2\nsleep 0.3\nexit 137\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &suite{o: options{scaleTargets: []int{1}, scalePending: []int{scaleTarget}, memLimitMiB: 256,
		idleWindow: time.Minute}, log: io.Discard, tmp: dir, bin: bin, rec: newRecorder()}
	recv, err := startSink(200, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.close()
	s.rec.add("e/free/delivered", scaleTarget) // the run without a limit delivered everything
	if err := s.deliverBacklog(t.Context(), recv, src, scaleTarget, "e/limit", nil); err == nil {
		t.Fatal("deliverBacklog: no error for a hookproxy that delivered nothing")
	}
	for _, h := range s.scaleHeadlines() {
		if strings.Contains(h.what, "memory cgroup") {
			if got := h.met(); got != "**no**" {
				t.Errorf("hooks delivered under the limit: met = %q (hp %+v), want **no**", got, h.hp)
			}
			return
		}
	}
	t.Fatal("no memory-cgroup headline")
}
