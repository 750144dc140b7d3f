package main

import (
	"errors"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8080" || cfg.DataDir != "./hookproxy-data" || cfg.MaxBodyBytes != 1<<20 ||
		cfg.Retries != 5 || time.Duration(cfg.RetryInterval) != 5*time.Second ||
		time.Duration(cfg.BatchMaxWait) != time.Minute || time.Duration(cfg.SendTimeout) != 15*time.Second ||
		time.Duration(cfg.DrainTimeout) != 20*time.Second || cfg.OnGiveUp != "dead-letter" ||
		len(cfg.CaptureMethods) != 1 || cfg.CaptureMethods[0] != "POST" || cfg.batching() {
		t.Fatalf("defaults = %+v", cfg)
	}
}

func TestConfigParsesUnits(t *testing.T) {
	cfg, err := loadConfig([]string{
		"HOOKPROXY_BATCH_TIME=30", "HOOKPROXY_RETRY_INTERVAL=1.5", "HOOKPROXY_BATCH_MAX_WAIT=2m",
		"HOOKPROXY_MAX_BODY_BYTES=512KiB", "HOOKPROXY_MAX_PENDING_BYTES=1GB",
		"HOOKPROXY_CAPTURE_HOSTS=*.example.com,hooks.test", "HOOKPROXY_BATCH_SIZE=10",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := time.Duration(cfg.BatchTime), 30*time.Second; got != want {
		t.Errorf("BATCH_TIME = %v, want %v", got, want)
	}
	if got, want := time.Duration(cfg.RetryInterval), 1500*time.Millisecond; got != want {
		t.Errorf("RETRY_INTERVAL = %v, want %v", got, want)
	}
	if got, want := time.Duration(cfg.BatchMaxWait), 2*time.Minute; got != want {
		t.Errorf("BATCH_MAX_WAIT = %v, want %v", got, want)
	}
	if cfg.MaxBodyBytes != 512<<10 || cfg.MaxPendingBytes != 1e9 {
		t.Errorf("sizes = %d, %d", cfg.MaxBodyBytes, cfg.MaxPendingBytes)
	}
	if len(cfg.CaptureHosts) != 2 || cfg.CaptureHosts[1] != "hooks.test" || !cfg.batching() {
		t.Errorf("config = %+v", cfg)
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	tests := []struct{ env, want string }{
		{"HOOKPROXY_BATCH_SIZE=abc", `HOOKPROXY_BATCH_SIZE="abc"`},
		{"HOOKPROXY_BATCH_SIZE=-1", "HOOKPROXY_BATCH_SIZE=-1"},
		{"HOOKPROXY_BATCH_TIME=soon", `HOOKPROXY_BATCH_TIME="soon"`},
		{"HOOKPROXY_RETRY_INTERVAL=0", "HOOKPROXY_RETRY_INTERVAL=0:"},
		{"HOOKPROXY_RETRIES=-2", "HOOKPROXY_RETRIES=-2"},
		{"HOOKPROXY_MAX_BODY_BYTES=lots", `HOOKPROXY_MAX_BODY_BYTES="lots"`},
		{"HOOKPROXY_ON_GIVE_UP=ignore", "HOOKPROXY_ON_GIVE_UP=ignore"},
		{"HOOKPROXY_ON_STORE_ERROR=drop", "HOOKPROXY_ON_STORE_ERROR=drop"},
		{"HOOKPROXY_SEND_CONCURRENCY=0", "HOOKPROXY_SEND_CONCURRENCY=0"},
		{"HOOKPROXY_LOG_LEVEL=loud", "HOOKPROXY_LOG_LEVEL=loud"},
		{"HOOKPROXY_LOG_FORMAT=xml", "HOOKPROXY_LOG_FORMAT=xml"},
		{"HOOKPROXY_ADMIN_LISTEN=9090", "HOOKPROXY_ADMIN_LISTEN=9090"},
		{"HOOKPROXY_STALL_AFTER=-1s", "HOOKPROXY_STALL_AFTER=-1s"},
		{"HOOKPROXY_MEMORY_LIMIT=1MiB", "HOOKPROXY_MEMORY_LIMIT=1MiB:"},
		{"HOOKPROXY_MEMORY_LIMIT=much", `HOOKPROXY_MEMORY_LIMIT="much"`},
		{"HOOKPROXY_CAPTURE_METHODS=POST,CONNECT", "HOOKPROXY_CAPTURE_METHODS=POST,CONNECT: capture method CONNECT"},
		{"HOOKPROXY_CAPTURE_METHODS=PO ST", "HOOKPROXY_CAPTURE_METHODS=PO ST"},
		{"HOOKPROXY_CAPTURE_HOSTS=https://hooks.example.com/", "HOOKPROXY_CAPTURE_HOSTS=https://hooks.example.com/: pattern"},
		{"HOOKPROXY_CAPTURE_HOSTS=a.example.com,", `HOOKPROXY_CAPTURE_HOSTS=a.example.com,: pattern "" is empty`},
		{"HOOKPROXY_MITM_HOSTS=*.*.example.com", "HOOKPROXY_MITM_HOSTS=*.*.example.com: pattern"},
		{"HOOKPROXY_ADMIN_TOKEN= \t", `HOOKPROXY_ADMIN_TOKEN=" \t": is only white space`},
	}
	for _, tt := range tests {
		_, err := loadConfig([]string{tt.env})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to name %s", tt.env, err, tt.want)
		}
	}
}

func TestBadConfigurationStopsStart(t *testing.T) {
	for _, tt := range []struct{ env, name string }{
		{"HOOKPROXY_BATCH_SIZE=ten", "HOOKPROXY_BATCH_SIZE"},
		// Checked by the proxy package, and refused before anything starts.
		{"HOOKPROXY_CAPTURE_HOSTS=hooks.example.com:8443", "HOOKPROXY_CAPTURE_HOSTS"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		err := run(t.Context(), nil, []string{tt.env, "HOOKPROXY_DATA_DIR=" + dir}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.name) {
			t.Errorf("%s: run = %v, want a start-up error naming %s", tt.env, err, tt.name)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the data dir was made (stat: %v); a bad setting must stop the start before anything", tt.env, err)
		}
	}
}

// TestMemoryLimit: the runtime's soft memory limit is
// HOOKPROXY_MEMORY_LIMIT (128MiB by default), unless GOMEMLIMIT is set or
// the setting is 0.
func TestMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	for _, tt := range []struct {
		name    string
		environ []string
		want    int64 // the limit in force afterwards
		source  string
	}{
		{"default", nil, 128 << 20, "HOOKPROXY_MEMORY_LIMIT"},
		{"set", []string{"HOOKPROXY_MEMORY_LIMIT=1GiB"}, 1 << 30, "HOOKPROXY_MEMORY_LIMIT"},
		// The runtime applied GOMEMLIMIT at start; here the limit in force
		// before the call stands for it.
		{"GOMEMLIMIT wins", []string{"GOMEMLIMIT=300MiB", "HOOKPROXY_MEMORY_LIMIT=1GiB"}, 300 << 20, "GOMEMLIMIT"},
		{"off", []string{"HOOKPROXY_MEMORY_LIMIT=0"}, math.MaxInt64, "none"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := int64(math.MaxInt64)
			if tt.source == "GOMEMLIMIT" {
				before = tt.want
			}
			debug.SetMemoryLimit(before)
			cfg, err := loadConfig(tt.environ)
			if err != nil {
				t.Fatal(err)
			}
			limit, source := applyMemoryLimit(cfg, tt.environ)
			if got := debug.SetMemoryLimit(-1); got != tt.want || limit != tt.want || source != tt.source {
				t.Errorf("limit in force %d, reported %d from %s; want %d from %s", got, limit, source, tt.want, tt.source)
			}
		})
	}
}

// TestOutOfRangeNumbersAreRefused: a duration or a byte size that is not
// finite or does not fit in 64 bits is refused with the value as written,
// and a large integer is taken exactly.
func TestOutOfRangeNumbersAreRefused(t *testing.T) {
	for _, v := range []string{"NaN", "Inf", "-Inf", "1e30", "9.3e9"} {
		var d Duration
		if err := d.UnmarshalText([]byte(v)); err == nil {
			t.Errorf("Duration %q accepted as %v, want an error", v, d)
		}
	}
	for _, v := range []string{"NaN", "Inf", "1e30", "8388608TiB"} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(v)); err == nil {
			t.Errorf("ByteSize %q accepted as %d, want an error", v, int64(b))
		}
	}
	// Plain integers are exact byte counts.
	for _, tt := range []struct {
		in   string
		want int64
	}{{"9223372036854775807", math.MaxInt64}, {"9007199254740993", 9007199254740993}} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(tt.in)); err != nil || int64(b) != tt.want {
			t.Errorf("ByteSize %q = %d, %v; want %d", tt.in, int64(b), err, tt.want)
		}
	}
	// The error names the value the operator wrote.
	for _, tt := range []struct{ env, want string }{
		{"HOOKPROXY_DRAIN_TIMEOUT=NaN", `HOOKPROXY_DRAIN_TIMEOUT="NaN"`},
		{"HOOKPROXY_BATCH_TIME=1e30", `HOOKPROXY_BATCH_TIME="1e30"`},
		{"HOOKPROXY_MAX_PENDING_BYTES=1e30", `HOOKPROXY_MAX_PENDING_BYTES="1e30"`},
		{"HOOKPROXY_MEMORY_LIMIT=Inf", `HOOKPROXY_MEMORY_LIMIT="Inf"`},
	} {
		_, err := loadConfig([]string{tt.env})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to name %s", tt.env, err, tt.want)
		}
	}
}

// TestListenIsValidated: a HOOKPROXY_LISTEN that is not an address stops
// the start before anything is made, and one that cannot be bound is
// named in the error.
func TestListenIsValidated(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, listen := range []string{"8080", busy.Addr().String()} {
		dir := filepath.Join(t.TempDir(), "data")
		environ := []string{"HOOKPROXY_LISTEN=" + listen, "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:0", "HOOKPROXY_DATA_DIR=" + dir}
		err := run(t.Context(), nil, environ, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "HOOKPROXY_LISTEN") {
			t.Errorf("LISTEN=%s: run = %v, want an error naming HOOKPROXY_LISTEN", listen, err)
		}
		if listen == "8080" {
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("LISTEN=%s: the data dir was made (stat: %v); a bad setting must stop the start before anything", listen, err)
			}
		}
	}
}

// TestQuotaBelowBodyLimit: a MAX_PENDING_BYTES below MAX_BODY_BYTES
// would refuse some hooks for ever, even on an empty store: it is refused.
func TestQuotaBelowBodyLimit(t *testing.T) {
	for _, tt := range []struct {
		environ []string
		ok      bool
	}{
		{[]string{"HOOKPROXY_MAX_PENDING_BYTES=1KiB"}, false}, // below the default 1MiB body limit
		{[]string{"HOOKPROXY_MAX_PENDING_BYTES=1KiB", "HOOKPROXY_MAX_BODY_BYTES=1KiB"}, true},
		{[]string{"HOOKPROXY_MAX_PENDING_BYTES=0"}, true},
	} {
		_, err := loadConfig(tt.environ)
		if tt.ok && err != nil {
			t.Errorf("%v: %v, want it accepted", tt.environ, err)
		}
		if !tt.ok && (err == nil || !strings.Contains(err.Error(), "HOOKPROXY_MAX_PENDING_BYTES=1KiB") || !strings.Contains(err.Error(), "HOOKPROXY_MAX_BODY_BYTES")) {
			t.Errorf("%v: %v, want an error naming both settings", tt.environ, err)
		}
	}
}
