package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"hookproxy/buffer"
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
		cfg.MaxCapturingBytes != 32<<20 ||
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
		{"HOOKPROXY_ON_GIVE_UP=ignore", `HOOKPROXY_ON_GIVE_UP="ignore"`},
		{"HOOKPROXY_ON_STORE_ERROR=drop", `HOOKPROXY_ON_STORE_ERROR="drop"`},
		{"HOOKPROXY_SEND_CONCURRENCY=0", "HOOKPROXY_SEND_CONCURRENCY=0"},
		{"HOOKPROXY_LOG_LEVEL=loud", `HOOKPROXY_LOG_LEVEL="loud"`},
		{"HOOKPROXY_LOG_LEVEL=error+100", `HOOKPROXY_LOG_LEVEL="error+100"`},
		{"HOOKPROXY_LOG_LEVEL=INFO-4", `HOOKPROXY_LOG_LEVEL="INFO-4"`},
		{"HOOKPROXY_LOG_FORMAT=xml", `HOOKPROXY_LOG_FORMAT="xml"`},
		{"HOOKPROXY_ADMIN_LISTEN=9090", `HOOKPROXY_ADMIN_LISTEN="9090"`},
		{"HOOKPROXY_STALL_AFTER=-1s", "HOOKPROXY_STALL_AFTER=-1s"},
		{"HOOKPROXY_MEMORY_LIMIT=1MiB", "HOOKPROXY_MEMORY_LIMIT=1MiB:"},
		{"HOOKPROXY_MEMORY_LIMIT=much", `HOOKPROXY_MEMORY_LIMIT="much"`},
		// A fraction of a byte is not 0, which means no limit.
		{"HOOKPROXY_MEMORY_LIMIT=0.9", `HOOKPROXY_MEMORY_LIMIT="0.9": "0.9" is less than one byte`},
		{"HOOKPROXY_MAX_PENDING_BYTES=0.5B", `HOOKPROXY_MAX_PENDING_BYTES="0.5B": "0.5B" is less than one byte`},
		{"HOOKPROXY_CAPTURE_METHODS=POST,CONNECT", `HOOKPROXY_CAPTURE_METHODS="POST,CONNECT": capture method CONNECT`},
		{"HOOKPROXY_CAPTURE_METHODS=PO ST", `HOOKPROXY_CAPTURE_METHODS="PO ST"`},
		{"HOOKPROXY_CAPTURE_HOSTS=https://hooks.example.com/", `HOOKPROXY_CAPTURE_HOSTS="https://hooks.example.com/": pattern`},
		{"HOOKPROXY_CAPTURE_HOSTS=a.example.com,", `HOOKPROXY_CAPTURE_HOSTS="a.example.com,": pattern "" is empty`},
		{"HOOKPROXY_MITM_HOSTS=*.*.example.com", `HOOKPROXY_MITM_HOSTS="*.*.example.com": pattern`},
		{"HOOKPROXY_ALLOW_CIDRS=10.0.0.0/8,", `HOOKPROXY_ALLOW_CIDRS="10.0.0.0/8,": parse allowed CIDR "": empty entry`},
		{"HOOKPROXY_ALLOW_CIDRS=,", `HOOKPROXY_ALLOW_CIDRS=",": parse allowed CIDR "": empty entry`},
		{"HOOKPROXY_ADMIN_TOKEN= \t", `HOOKPROXY_ADMIN_TOKEN=" \t": is only white space`},
		// An empty password ("app:$PASS" with PASS unset) or user.
		{"HOOKPROXY_PROXY_AUTH=app:", "HOOKPROXY_PROXY_AUTH=(hidden): must be user:password"},
		{"HOOKPROXY_PROXY_AUTH=:pw", "HOOKPROXY_PROXY_AUTH=(hidden): must be user:password"},
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
		// A port that could never listen: checked, not tried.
		{"HOOKPROXY_LISTEN=127.0.0.1:99999", "HOOKPROXY_LISTEN"},
		// A gone webhook the egress guard would refuse every time.
		{"HOOKPROXY_GONE_WEBHOOK=http://127.0.0.1:8000/gone", "HOOKPROXY_GONE_WEBHOOK"},
		{"HOOKPROXY_UPSTREAM_CA_FILE=/no/such/ca.pem", "HOOKPROXY_UPSTREAM_CA_FILE"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		// Should the setting be accepted, hookproxy starts on ports the
		// system chooses and stops at once (the context is done).
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		environ := []string{"HOOKPROXY_LISTEN=127.0.0.1:0", "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:0", "HOOKPROXY_MEMORY_LIMIT=0",
			tt.env, "HOOKPROXY_DATA_DIR=" + dir}
		err := run(ctx, nil, environ, io.Discard, io.Discard)
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
	// 0 written as a decimal is still 0 (no limit).
	if b := ByteSize(1); b.UnmarshalText([]byte("0.0KiB")) != nil || b != 0 {
		t.Errorf("ByteSize %q = %d, want 0", "0.0KiB", int64(b))
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

// TestNumbersAreDecimal: a duration's or a byte size's number is plain
// decimal, as the README promises and the integer settings read it.
// strconv.ParseFloat took "1_000" (1000s), "0x1p4" (16s) and "1e3", which
// an operator may not mean; they are refused, naming the variable and
// the value.
func TestNumbersAreDecimal(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"30", 30 * time.Second}, {"1.5", 1500 * time.Millisecond}, {".5", 500 * time.Millisecond},
		{"5.", 5 * time.Second}, {"010", 10 * time.Second}, {"+5", 5 * time.Second}, {"-5", -5 * time.Second},
		{" 5\n", 5 * time.Second}, {"0.000000001", time.Nanosecond}, {"0", 0}, {"1m30s", 90 * time.Second},
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.in)); err != nil || time.Duration(d) != tt.want {
			t.Errorf("Duration %q = %v, %v; want %v", tt.in, time.Duration(d), err, tt.want)
		}
	}
	for _, in := range []string{"1_000", "0x10", "0x1p4", "1e3", "1E3", "Inf", "+Inf", "infinity", "NaN", "0b101", "0o7", ".", "+", "1.2.3", "5 s", "\u0663"} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("Duration %q accepted as %v, want an error", in, time.Duration(d))
		}
	}
	for _, tt := range []struct {
		in   string
		want int64
	}{
		{"1000", 1000}, {"010", 10}, {"+5", 5}, {"1.5MiB", 3 << 19}, {".5KiB", 512}, {"5 KiB", 5 << 10}, {"2kb", 2000},
		// Decimals are exact: read in floating point, these were a byte
		// short.
		{"2.01KB", 2010}, {"2.01MB", 2_010_000}, {"2.01GB", 2_010_000_000}, {"2.03KB", 2030},
		{"1.5B", 1}, {"8388607.5TiB", 8388607<<40 + 1<<39},
	} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(tt.in)); err != nil || int64(b) != tt.want {
			t.Errorf("ByteSize %q = %d, %v; want %d", tt.in, int64(b), err, tt.want)
		}
	}
	for _, in := range []string{"1_000", "1_000B", "1_000KiB", "0x10", "0x10B", "0x1p4", "0x1p4KiB", "1e3", "1e3B", "1E6", "Inf", "NaN", "-5", "B", "KiB"} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("ByteSize %q accepted as %d, want an error", in, int64(b))
		}
	}
	for _, tt := range []struct{ env, want string }{
		{"HOOKPROXY_BATCH_TIME=1_000", `HOOKPROXY_BATCH_TIME="1_000": "1_000" is neither a duration`},
		{"HOOKPROXY_RETRY_INTERVAL=0x1p4", `HOOKPROXY_RETRY_INTERVAL="0x1p4"`},
		{"HOOKPROXY_SEND_TIMEOUT=1e3", `HOOKPROXY_SEND_TIMEOUT="1e3"`},
		{"HOOKPROXY_MAX_BODY_BYTES=1_000B", `HOOKPROXY_MAX_BODY_BYTES="1_000B": "1_000B" is not a byte size`},
		{"HOOKPROXY_MAX_PENDING_BYTES=1e9", `HOOKPROXY_MAX_PENDING_BYTES="1e9"`},
	} {
		_, err := loadConfig([]string{tt.env})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to name %s", tt.env, err, tt.want)
		}
	}
}

// TestEveryBadSettingReportedAtOnce: a setting that does not parse does
// not hide the others' errors: one start names each bad setting with its
// value, so that they are fixed in one go. A setting that did not parse
// is not checked again (its zero would be "must be positive"), nor are
// checks of another setting against it.
func TestEveryBadSettingReportedAtOnce(t *testing.T) {
	_, err := loadConfig([]string{
		"HOOKPROXY_BATCH_SIZE=ten", "HOOKPROXY_MAX_BODY_BYTES=lots", "HOOKPROXY_ALLOW_PRIVATE_TARGETS=yes", // env's parse errors
		"HOOKPROXY_ON_GIVE_UP=ignore", "HOOKPROXY_RETRY_INTERVAL=-5s", // validation errors
		// Checked against a setting that did not parse: its value is not
		// known, so neither is whether they are wrong.
		"HOOKPROXY_MAX_PENDING_BYTES=512KiB", "HOOKPROXY_GONE_WEBHOOK=http://10.0.0.5/gone",
	})
	if err == nil {
		t.Fatal("loadConfig accepted bad settings")
	}
	want := []string{
		`configuration: HOOKPROXY_MAX_BODY_BYTES="lots": "lots" is not a byte size`,
		`HOOKPROXY_BATCH_SIZE="ten": strconv.ParseInt: parsing "ten": invalid syntax`,
		`HOOKPROXY_ALLOW_PRIVATE_TARGETS="yes": strconv.ParseBool: parsing "yes": invalid syntax`,
		`HOOKPROXY_RETRY_INTERVAL=-5s: must be positive`,
		`HOOKPROXY_ON_GIVE_UP="ignore": must be dead-letter or discard`,
	}
	lines := strings.Split(err.Error(), "\n")
	for _, w := range want {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, w) }) {
			t.Errorf("error lacks a line %q:\n%v", w, err)
		}
	}
	if len(lines) != len(want) {
		t.Errorf("error has %d lines, want %d (one per bad setting):\n%v", len(lines), len(want), err)
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

// TestBoundsBelowBodyLimit: a MAX_PENDING_BYTES or MAX_CAPTURING_BYTES
// below MAX_BODY_BYTES would refuse or hold some hooks for ever, even on
// an empty store: it is refused.
func TestBoundsBelowBodyLimit(t *testing.T) {
	for _, tt := range []struct {
		environ []string
		bad     string // the setting named with the body limit; "": accepted
	}{
		{[]string{"HOOKPROXY_MAX_PENDING_BYTES=1KiB"}, "HOOKPROXY_MAX_PENDING_BYTES=1KiB"}, // below the default 1MiB body limit
		{[]string{"HOOKPROXY_MAX_PENDING_BYTES=1KiB", "HOOKPROXY_MAX_BODY_BYTES=1KiB"}, ""},
		{[]string{"HOOKPROXY_MAX_PENDING_BYTES=0"}, ""},
		{[]string{"HOOKPROXY_MAX_CAPTURING_BYTES=512KiB"}, "HOOKPROXY_MAX_CAPTURING_BYTES=512KiB"},
		// The default 32MiB bound is below the largest body limit allowed.
		{[]string{"HOOKPROXY_MAX_BODY_BYTES=16MiB"}, ""},
		{[]string{"HOOKPROXY_MAX_CAPTURING_BYTES=16MiB", "HOOKPROXY_MAX_BODY_BYTES=16MiB"}, ""},
		{[]string{"HOOKPROXY_MAX_CAPTURING_BYTES=0"}, ""},
	} {
		_, err := loadConfig(tt.environ)
		if tt.bad == "" && err != nil {
			t.Errorf("%v: %v, want it accepted", tt.environ, err)
		}
		if tt.bad != "" && (err == nil || !strings.Contains(err.Error(), tt.bad) || !strings.Contains(err.Error(), "HOOKPROXY_MAX_BODY_BYTES")) {
			t.Errorf("%v: %v, want an error naming both settings", tt.environ, err)
		}
	}
}

// TestBoundsAgainstARefusedBodyLimit: a MAX_BODY_BYTES that is itself
// refused (over 16MiB) is not the measure of the bounds: a bound that
// fits every body limit allowed is not reported as too small for it,
// which would send the operator to raise it for nothing.
func TestBoundsAgainstARefusedBodyLimit(t *testing.T) {
	_, err := loadConfig([]string{"HOOKPROXY_MAX_BODY_BYTES=20MiB", "HOOKPROXY_MAX_CAPTURING_BYTES=16MiB", "HOOKPROXY_MAX_PENDING_BYTES=16MiB"})
	if err == nil || !strings.Contains(err.Error(), "HOOKPROXY_MAX_BODY_BYTES=20MiB") {
		t.Fatalf("MAX_BODY_BYTES=20MiB: %v, want it refused", err)
	}
	for _, name := range []string{"HOOKPROXY_MAX_CAPTURING_BYTES", "HOOKPROXY_MAX_PENDING_BYTES"} {
		if strings.Contains(err.Error(), name) {
			t.Errorf("%s=16MiB reported against a refused body limit: %v", name, err)
		}
	}
}

// TestSecretsIgnoreSurroundingWhiteSpace: a secret read from a file
// ends with a newline. HOOKPROXY_PROXY_AUTH drops it as
// HOOKPROXY_ADMIN_TOKEN and HOOKPROXY_SIGNING_SECRET do, instead of
// answering every request of the app 407; a value that is only white
// space is refused rather than turning the credentials off.
func TestSecretsIgnoreSurroundingWhiteSpace(t *testing.T) {
	cfg, err := loadConfig([]string{"HOOKPROXY_PROXY_AUTH=app:pw\n", "HOOKPROXY_ADMIN_TOKEN= op-token\r\n"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.ProxyAuth, "app:pw"; got != want {
		t.Errorf("PROXY_AUTH = %q, want %q", got, want)
	}
	if got, want := cfg.AdminToken, "op-token"; got != want {
		t.Errorf("ADMIN_TOKEN = %q, want %q", got, want)
	}
	for _, tt := range []struct{ env, want string }{
		{"HOOKPROXY_PROXY_AUTH= \n", `HOOKPROXY_PROXY_AUTH=" \n": is only white space`},
		{"HOOKPROXY_ADMIN_TOKEN=\t", `HOOKPROXY_ADMIN_TOKEN="\t": is only white space`},
		// Deliveries would go out unsigned without a word.
		{"HOOKPROXY_SIGNING_SECRET= \n", `HOOKPROXY_SIGNING_SECRET=" \n": is only white space`},
	} {
		if _, err := loadConfig([]string{tt.env}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want it to name %s", tt.env, err, tt.want)
		}
	}
}

// TestSecretsWithControlCharactersRefused: a control character inside
// the proxy credentials or the admin token can never arrive in a
// request: the start is refused with an error that names the variable
// and repeats nothing of the secret.
func TestSecretsWithControlCharactersRefused(t *testing.T) {
	for _, tt := range []struct{ name, value string }{
		{"PROXY_AUTH", "app:s3cret\nline2"},
		{"PROXY_AUTH", "app:s3c\x00ret"},
		{"PROXY_AUTH", "app\t:s3cret"},
		{"ADMIN_TOKEN", "s3cret\x7f"},
		{"ADMIN_TOKEN", "s3cret\r\nX-Injected: 1"},
	} {
		_, err := loadConfig([]string{envPrefix + tt.name + "=" + tt.value})
		if err == nil || !strings.Contains(err.Error(), envPrefix+tt.name+"=(hidden): holds a control character") {
			t.Errorf("%s=%q: err = %v, want it refused naming %s%s", tt.name, tt.value, err, envPrefix, tt.name)
			continue
		}
		if strings.Contains(err.Error(), "s3c") || strings.Contains(err.Error(), "app") {
			t.Errorf("%s=%q: err = %v repeats the secret", tt.name, tt.value, err)
		}
	}
}

// TestPathsWithControlCharactersRefused: paths keep their surrounding
// white space, so a data directory written as a YAML block scalar ends
// with a line break. Taken as written, the store would go to a new
// directory "/data\n" beside the volume, and the acknowledged hooks with
// it: the start is refused instead, before anything is made, naming the
// variable and showing the line break; so is a path that is only white
// space.
func TestPathsWithControlCharactersRefused(t *testing.T) {
	base := t.TempDir()
	for _, tt := range []struct{ name, value, want string }{
		{"DATA_DIR", "data\n", "holds a control character"},
		{"DATA_DIR", "da\tta", "holds a control character"},
		{"DATA_DIR", " ", "is only white space"},
		{"CA_BUNDLE_FILE", "bundle.pem\r\n", "holds a control character"},
		{"CA_BUNDLE_FILE", "\t", "is only white space"},
	} {
		value := tt.value
		if strings.TrimSpace(value) != "" {
			value = filepath.Join(base, value)
		}
		environ := []string{"HOOKPROXY_LISTEN=127.0.0.1:0", "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:0", "HOOKPROXY_MEMORY_LIMIT=0",
			"HOOKPROXY_DATA_DIR=" + filepath.Join(base, "ok"), envPrefix + tt.name + "=" + value}
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // should the setting be accepted, hookproxy stops at once
		err := run(ctx, nil, environ, io.Discard, io.Discard)
		want := fmt.Sprintf("%s%s=%q: %s", envPrefix, tt.name, value, tt.want)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%q: run = %v, want an error with %s", tt.name, value, err, want)
		}
		if entries, _ := os.ReadDir(base); len(entries) > 0 {
			t.Errorf("%s=%q: %s was made; a bad path must stop the start before anything", tt.name, value, entries[0].Name())
		}
	}
	// The ca command makes the data directory's CA: it refuses the same.
	err := run(t.Context(), []string{"ca"}, []string{"HOOKPROXY_DATA_DIR=" + filepath.Join(base, "data") + "\n"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "HOOKPROXY_DATA_DIR=") {
		t.Errorf("ca: run = %v, want an error naming HOOKPROXY_DATA_DIR", err)
	}
	if entries, _ := os.ReadDir(base); len(entries) > 0 {
		t.Errorf("ca: %q was made", entries[0].Name())
	}
}

// TestWordSettingsIgnoreSurroundingWhiteSpace: the word settings drop
// surrounding white space as durations and sizes do, and a bad one is
// quoted as written, so a stray newline or space shows in the error.
func TestWordSettingsIgnoreSurroundingWhiteSpace(t *testing.T) {
	cfg, err := loadConfig([]string{
		"HOOKPROXY_ON_GIVE_UP=discard\n", "HOOKPROXY_RETRY_BACKOFF=fixed ", "HOOKPROXY_LOG_FORMAT=json\n",
		"HOOKPROXY_ON_STORE_ERROR= reject", "HOOKPROXY_LOG_LEVEL=warn\r\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := []string{cfg.OnGiveUp, cfg.RetryBackoff, cfg.LogFormat, cfg.OnStoreError, cfg.LogLevel}
	if want := []string{"discard", "fixed", "json", "reject", "warn"}; !slices.Equal(got, want) {
		t.Errorf("word settings = %q, want %q", got, want)
	}
	// Numbers and true/false too, as the README says of every setting but
	// addresses and paths.
	cfg, err = loadConfig([]string{
		"HOOKPROXY_BATCH_SIZE=50\n", "HOOKPROXY_RETRIES= 10", "HOOKPROXY_SEND_CONCURRENCY=8 ",
		"HOOKPROXY_FOLLOW_REDIRECTS=true\n", "HOOKPROXY_ALLOW_PRIVATE_TARGETS= true",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BatchSize != 50 || cfg.Retries != 10 || cfg.SendConcurrency != 8 || !cfg.FollowRedirects || !cfg.AllowPrivateTargets {
		t.Errorf("numbers and flags with white space around them: %d %d %d %t %t", cfg.BatchSize, cfg.Retries,
			cfg.SendConcurrency, cfg.FollowRedirects, cfg.AllowPrivateTargets)
	}
	// And the gone webhook's URL, which white space never belongs to (a
	// Secret file ends with a newline).
	cfg, err = loadConfig([]string{"HOOKPROXY_GONE_WEBHOOK= https://app.example.com/hooks/gone?token=t\n"})
	if err != nil || cfg.GoneWebhook != "https://app.example.com/hooks/gone?token=t" {
		t.Errorf("gone webhook with white space around it: %q, %v", cfg.GoneWebhook, err)
	}
	for _, tt := range []struct{ env, want string }{
		{"HOOKPROXY_ON_GIVE_UP=ignore\n", `HOOKPROXY_ON_GIVE_UP="ignore\n": must be`},
		{"HOOKPROXY_RETRY_BACKOFF=linear ", `HOOKPROXY_RETRY_BACKOFF="linear ": must be`},
		{"HOOKPROXY_LOG_FORMAT=j son", `HOOKPROXY_LOG_FORMAT="j son": must be`},
		{"HOOKPROXY_ON_STORE_ERROR=drop\t", `HOOKPROXY_ON_STORE_ERROR="drop\t": must be`},
		{"HOOKPROXY_LOG_LEVEL=loud\n", `HOOKPROXY_LOG_LEVEL="loud\n": must be`},
	} {
		if _, err := loadConfig([]string{tt.env}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want it to name %s", tt.env, err, tt.want)
		}
	}
}

// TestListenAddressesChecked: a listen address that can never work (a
// port out of range, the proxy and the admin listener on one port) or
// has no port is refused by the configuration check, without listening.
// Port 0 (the system's choice) may be on both.
func TestListenAddressesChecked(t *testing.T) {
	for _, tt := range []struct {
		environ []string
		want    string // "": accepted
	}{
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:99999"}, `HOOKPROXY_LISTEN="127.0.0.1:99999": port 99999 is out of range`},
		{[]string{"HOOKPROXY_LISTEN=:-1"}, `HOOKPROXY_LISTEN=":-1": port -1 is out of range`},
		{[]string{"HOOKPROXY_ADMIN_LISTEN=127.0.0.1:65536"}, `HOOKPROXY_ADMIN_LISTEN="127.0.0.1:65536": port 65536 is out of range`},
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:9090"}, `HOOKPROXY_ADMIN_LISTEN="127.0.0.1:9090": must be another address than HOOKPROXY_LISTEN`},
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:7000", "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:7000"}, "HOOKPROXY_ADMIN_LISTEN"},
		{[]string{"HOOKPROXY_LISTEN=[::1]:7000", "HOOKPROXY_ADMIN_LISTEN=[0:0::1]:7000"}, "HOOKPROXY_ADMIN_LISTEN"},
		// Every address and one of them: Linux refuses the second.
		{[]string{"HOOKPROXY_LISTEN=:7000", "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:7000"}, "HOOKPROXY_ADMIN_LISTEN"},
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:7000", "HOOKPROXY_ADMIN_LISTEN=0.0.0.0:7000"}, "HOOKPROXY_ADMIN_LISTEN"},
		{[]string{"HOOKPROXY_LISTEN=[::0]:7000", "HOOKPROXY_ADMIN_LISTEN=[::1]:7000"}, "HOOKPROXY_ADMIN_LISTEN"},
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:0", "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:0"}, ""},
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:7000", "HOOKPROXY_ADMIN_LISTEN=127.0.0.2:7000"}, ""},
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:7000", "HOOKPROXY_ADMIN_LISTEN=[::1]:7000"}, ""},
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:65535"}, ""},
		// No port, as ":${PORT}" with PORT unset gives: the system would
		// choose one, where the app never looks.
		{[]string{"HOOKPROXY_LISTEN=127.0.0.1:"}, `HOOKPROXY_LISTEN="127.0.0.1:": has no port`},
		{[]string{"HOOKPROXY_LISTEN=:"}, `HOOKPROXY_LISTEN=":": has no port`},
		{[]string{"HOOKPROXY_ADMIN_LISTEN=0.0.0.0:"}, `HOOKPROXY_ADMIN_LISTEN="0.0.0.0:": has no port`},
	} {
		_, err := loadConfig(tt.environ)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v, want it accepted", tt.environ, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: err = %v, want it to name %s", tt.environ, err, tt.want)
		}
	}
}

// TestSettingFilesChecked: a file that a setting names and hookproxy
// reads at start must exist and be readable; a wrong path stops the
// start before the data directory, the store and a CA are made, with an
// error that names the variable.
func TestSettingFilesChecked(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	for _, tt := range []struct {
		environ []string
		want    string
	}{
		{[]string{"HOOKPROXY_UPSTREAM_CA_FILE=" + missing}, "HOOKPROXY_UPSTREAM_CA_FILE=" + strconvQuote(missing) + ": cannot be read: no such file or directory"},
		{[]string{"HOOKPROXY_UPSTREAM_CA_FILE=" + dir}, "HOOKPROXY_UPSTREAM_CA_FILE=" + strconvQuote(dir) + ": is a directory"},
		{[]string{"HOOKPROXY_CA_CERT_FILE=" + missing, "HOOKPROXY_CA_KEY_FILE=" + missing}, "HOOKPROXY_CA_CERT_FILE="},
		{[]string{"HOOKPROXY_CA_CERT_FILE=" + missing, "HOOKPROXY_CA_KEY_FILE=" + missing}, "HOOKPROXY_CA_KEY_FILE="},
	} {
		data := filepath.Join(t.TempDir(), "data")
		err := run(t.Context(), nil, append(tt.environ, "HOOKPROXY_DATA_DIR="+data), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: run = %v, want an error naming %s", tt.environ, err, tt.want)
		}
		if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%v: the data dir was made (stat: %v); a bad setting must stop the start before anything", tt.environ, err)
		}
	}
	if os.Geteuid() != 0 { // root reads any file
		unreadable := filepath.Join(dir, "unreadable.pem")
		if err := os.WriteFile(unreadable, nil, 0o000); err != nil {
			t.Fatal(err)
		}
		if _, err := loadConfig([]string{"HOOKPROXY_UPSTREAM_CA_FILE=" + unreadable}); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("an unreadable UPSTREAM_CA_FILE: err = %v, want permission denied", err)
		}
	}
}

// TestDataDirErrorNamesTheVariable: a data directory the store cannot
// open (a file, or one another hookproxy holds) stops the start with an
// error that names HOOKPROXY_DATA_DIR, as the README promises of every
// bad setting.
func TestDataDirErrorNamesTheVariable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	held := t.TempDir()
	store, err := buffer.Open(buffer.Options{Dir: held, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, dir := range []string{file, held} {
		environ := []string{"HOOKPROXY_DATA_DIR=" + dir, "HOOKPROXY_LISTEN=127.0.0.1:0", "HOOKPROXY_ADMIN_LISTEN=127.0.0.1:0"}
		err := run(t.Context(), nil, environ, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "HOOKPROXY_DATA_DIR") || !strings.Contains(err.Error(), dir) {
			t.Errorf("data dir %s: run = %v, want an error naming HOOKPROXY_DATA_DIR and the directory", dir, err)
		}
	}
}

// strconvQuote is s as %q prints it.
func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

// TestUnknownSettings: a HOOKPROXY_ variable hookproxy does not read is
// listed, with the setting it is probably a misspelling of; the names
// Kubernetes sets for a Service named hookproxy and the command line's
// HOOKPROXY_ADMIN_URL are not.
func TestUnknownSettings(t *testing.T) {
	vars := map[string]string{
		"HOOKPROXY_SIGNING_SECRETS":     "whsec_c2VjcmV0",
		"HOOKPROXY_BATCHSIZE":           "10",
		"HOOKPROXY_admin_token":         "s3cret",
		"HOOKPROXY_WHATEVER_ELSE":       "1",
		"HOOKPROXY_BATCH_SIZE":          "10",
		"HOOKPROXY_ADMIN_URL":           "http://127.0.0.1:9090",
		"HOOKPROXY_SERVICE_HOST":        "10.96.0.12",
		"HOOKPROXY_SERVICE_PORT_ADMIN":  "9090",
		"HOOKPROXY_PORT":                "tcp://10.96.0.12:8080",
		"HOOKPROXY_PORT_9090_TCP_PROTO": "tcp",
		"OTHER_SIGNING_SECRET":          "x",
	}
	want := []string{
		"HOOKPROXY_BATCHSIZE (did you mean HOOKPROXY_BATCH_SIZE?)",
		"HOOKPROXY_SIGNING_SECRETS (did you mean HOOKPROXY_SIGNING_SECRET?)",
		"HOOKPROXY_WHATEVER_ELSE",
		"HOOKPROXY_admin_token (did you mean HOOKPROXY_ADMIN_TOKEN?)",
	}
	if got := unknownSettings(vars); !slices.Equal(got, want) {
		t.Errorf("unknownSettings =\n%q\nwant\n%q", got, want)
	}
	// The known names are Config's env tags: each one is known.
	for name := range knownSettings() {
		if got := unknownSettings(map[string]string{name: "x"}); len(got) != 0 {
			t.Errorf("%s is listed as unknown: %q", name, got)
		}
	}
}

// TestUnknownSettingsWarned: hookproxy starts with misspelt settings (a
// Kubernetes Service adds HOOKPROXY_ variables of its own), and says so
// in one warning that names them, never their values.
func TestUnknownSettingsWarned(t *testing.T) {
	hp := startHookproxy(t, map[string]string{
		"SIGNING_SECRETS": "whsec_dG9wc2VjcmV0", "ADMIN_TOKENS": "t0ps3cret",
		"SERVICE_HOST": "10.96.0.12", "PORT_9090_TCP": "tcp://10.96.0.12:9090",
	})
	const msg = "unknown settings ignored: hookproxy reads no such variables"
	logs := hp.logs.String()
	if n := strings.Count(logs, `"msg":"`+msg+`"`); n != 1 {
		t.Fatalf("%d warnings %q, want 1\n%s", n, msg, logs)
	}
	want := "HOOKPROXY_ADMIN_TOKENS (did you mean HOOKPROXY_ADMIN_TOKEN?), HOOKPROXY_SIGNING_SECRETS (did you mean HOOKPROXY_SIGNING_SECRET?)"
	if got := hp.logs.field(msg, "variables"); got != want {
		t.Errorf("variables = %q, want %q", got, want)
	}
	if strings.Contains(logs, "t0ps3cret") || strings.Contains(logs, "dG9wc2VjcmV0") {
		t.Errorf("the logs repeat a value of an unknown variable")
	}
}
