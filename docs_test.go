package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
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
