package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"hookproxy/admin"
	"hookproxy/buffer"
	"hookproxy/sender"
)

// TestREADMEListsEverySetting: every variable hookproxy reads is in the
// README's settings table with its real default, and the table lists no
// variable hookproxy does not read.
func TestREADMEListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(HOOKPROXY_[A-Z_]+)` \\| ([^|]*) \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = strings.TrimSpace(m[2])
	}
	ct := reflect.TypeFor[Config]()
	read := map[string]bool{}
	for i := range ct.NumField() {
		f := ct.Field(i)
		name := envPrefix + strings.Split(f.Tag.Get("env"), ",")[0]
		read[name] = true
		doc, ok := documented[name]
		if !ok {
			t.Errorf("%s is not in the README's settings table", name)
			continue
		}
		def, hasDefault := f.Tag.Lookup("envDefault")
		want := "`" + def + "`"
		if !hasDefault || def == "" {
			if !strings.HasPrefix(doc, "(empty") {
				t.Errorf("%s: README default %s, want (empty...)", name, doc)
			}
			continue
		}
		if doc != want {
			t.Errorf("%s: README default %s, want %s", name, doc, want)
		}
	}
	for name := range documented {
		if !read[name] {
			t.Errorf("README documents %s, which hookproxy does not read", name)
		}
	}
}

// TestREADMEListsEveryMetric: every hookproxy_* metric the admin listener
// exports, and every label value set up front, is in the README's metrics
// table, and the table names no metric that does not exist.
func TestREADMEListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	store, err := buffer.Open(buffer.Options{Dir: t.TempDir(), GCInterval: -1, MinFreeBytes: storeReserve})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	metrics := admin.NewMetrics("test")
	snd, err := sender.New(sender.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	// As run.go wires them: every optional gauge is on.
	if _, err := admin.New(admin.Options{Store: store, Metrics: metrics, Progress: snd, DiskUsage: store.DiskUsage, Space: store.Space}); err != nil {
		t.Fatal(err)
	}
	fams, err := metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| (`hookproxy_[a-z_]+`(?:, `hookproxy_[a-z_]+`)*) \\| [a-z]+ \\| (.*) \\|$")
	documented := map[string]string{} // metric: its row's text
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		for name := range strings.SplitSeq(m[1], ", ") {
			documented[strings.Trim(name, "`")] = m[2]
		}
	}
	exported := map[string]bool{}
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "hookproxy_") {
			continue
		}
		exported[name] = true
		text, ok := documented[name]
		if !ok {
			t.Errorf("metric %s is not in the README's metrics table", name)
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "version" && !strings.Contains(text, "`"+l.GetName()+"`") ||
					l.GetName() != "version" && !strings.Contains(text, "`"+l.GetValue()+"`") {
					t.Errorf("metric %s: the README's row does not name label %s=%s", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	for name := range documented {
		if !exported[name] {
			t.Errorf("the README documents metric %s, which hookproxy does not export", name)
		}
	}
}
