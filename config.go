package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"hookproxy/proxy"
)

// envPrefix starts every variable hookproxy reads.
const envPrefix = "HOOKPROXY_"

// Config is every setting of hookproxy, read once from the environment.
// The README's settings table lists the same variables with the same
// defaults (a test checks that).
type Config struct {
	Listen  string `env:"LISTEN" envDefault:":8080"`
	DataDir string `env:"DATA_DIR" envDefault:"./hookproxy-data"`

	CaptureMethods []string `env:"CAPTURE_METHODS" envDefault:"POST" envSeparator:","`
	CaptureHosts   []string `env:"CAPTURE_HOSTS" envSeparator:","`
	MaxBodyBytes   ByteSize `env:"MAX_BODY_BYTES" envDefault:"1MiB"`

	BatchSize    int      `env:"BATCH_SIZE" envDefault:"0"`
	BatchTime    Duration `env:"BATCH_TIME" envDefault:"0"`
	BatchMaxWait Duration `env:"BATCH_MAX_WAIT" envDefault:"1m"`

	Retries         int      `env:"RETRIES" envDefault:"5"`
	RetryInterval   Duration `env:"RETRY_INTERVAL" envDefault:"5s"`
	OnGiveUp        string   `env:"ON_GIVE_UP" envDefault:"dead-letter"`
	SendTimeout     Duration `env:"SEND_TIMEOUT" envDefault:"15s"`
	SendConcurrency int      `env:"SEND_CONCURRENCY" envDefault:"16"`

	MaxPendingBytes ByteSize `env:"MAX_PENDING_BYTES" envDefault:"0"`
	OnStoreError    string   `env:"ON_STORE_ERROR" envDefault:"forward"`

	// MemoryLimit is the Go runtime's soft memory limit (memlimit.go).
	MemoryLimit ByteSize `env:"MEMORY_LIMIT" envDefault:"128MiB"`

	IdleTimeout  Duration `env:"IDLE_TIMEOUT" envDefault:"2m"`
	DrainTimeout Duration `env:"DRAIN_TIMEOUT" envDefault:"20s"`

	LogLevel  string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"text"`

	// The admin listener (health, readiness, metrics, JSON API).
	AdminListen string   `env:"ADMIN_LISTEN" envDefault:"127.0.0.1:9090"`
	AdminToken  string   `env:"ADMIN_TOKEN"`
	StallAfter  Duration `env:"STALL_AFTER" envDefault:"2m"`

	// HTTPS interception and upstream TLS (tls.go).
	CACertFile     string   `env:"CA_CERT_FILE"`
	CAKeyFile      string   `env:"CA_KEY_FILE"`
	CABundleFile   string   `env:"CA_BUNDLE_FILE"`
	MITMHosts      []string `env:"MITM_HOSTS" envSeparator:","`
	UpstreamCAFile string   `env:"UPSTREAM_CA_FILE"`
	ProxyAuth      string   `env:"PROXY_AUTH"`

	// Delivery policy (delivery.go): backoff, limits, redirects, 410
	// Gone, signatures and the egress guard.
	RetryBackoff        string   `env:"RETRY_BACKOFF" envDefault:"exponential"`
	RetryMaxInterval    Duration `env:"RETRY_MAX_INTERVAL" envDefault:"10m"`
	RetryMaxAge         Duration `env:"RETRY_MAX_AGE" envDefault:"24h"`
	BatchMaxBytes       ByteSize `env:"BATCH_MAX_BYTES" envDefault:"0"`
	FollowRedirects     bool     `env:"FOLLOW_REDIRECTS" envDefault:"false"`
	GoneWebhook         string   `env:"GONE_WEBHOOK"`
	SigningSecret       []string `env:"SIGNING_SECRET" envSeparator:","`
	AllowPrivateTargets bool     `env:"ALLOW_PRIVATE_TARGETS" envDefault:"false"`
	AllowCIDRs          []string `env:"ALLOW_CIDRS" envSeparator:","`
}

// loadConfig parses and validates the configuration from environ
// ("KEY=value" pairs, as os.Environ returns them).
func loadConfig(environ []string) (Config, error) {
	vars := env.ToMap(environ)
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Environment: vars, Prefix: envPrefix})
	if err != nil {
		return Config{}, fmt.Errorf("configuration: %w", nameVariables(err, vars))
	}
	if err := cfg.validate(vars); err != nil {
		return Config{}, fmt.Errorf("configuration: %w", err)
	}
	return cfg, nil
}

// nameVariables rewrites env's parse errors, which name struct fields,
// to name the variable and the value the operator wrote.
func nameVariables(err error, vars map[string]string) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	out := make([]error, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			out = append(out, e)
			continue
		}
		name := pe.Name
		if f, ok := reflect.TypeFor[Config]().FieldByName(pe.Name); ok {
			name = envPrefix + strings.Split(f.Tag.Get("env"), ",")[0]
		}
		out = append(out, fmt.Errorf("%s=%q: %w", name, vars[name], pe.Err))
	}
	return errors.Join(out...)
}

// validate checks the parsed values; vars holds them as written, which
// errors about durations and sizes quote.
func (c *Config) validate(vars map[string]string) error {
	var errs []error
	bad := func(name string, value any, why string) {
		switch value.(type) {
		case Duration, ByteSize:
			if raw := strings.TrimSpace(vars[envPrefix+name]); raw != "" {
				value = raw
			}
		}
		errs = append(errs, fmt.Errorf("%s%s=%v: %s", envPrefix, name, value, why))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("LISTEN", c.Listen, "must be an address such as :8080")
	}
	if c.DataDir == "" {
		bad("DATA_DIR", c.DataDir, "must be a directory")
	}
	if len(c.CaptureMethods) == 0 {
		bad("CAPTURE_METHODS", "", "must name at least one method")
	}
	if err := proxy.CheckCaptureMethods(c.CaptureMethods); len(c.CaptureMethods) > 0 && err != nil {
		bad("CAPTURE_METHODS", strings.Join(c.CaptureMethods, ","), err.Error())
	}
	if err := proxy.CheckHostPatterns(c.CaptureHosts); err != nil {
		bad("CAPTURE_HOSTS", strings.Join(c.CaptureHosts, ","), err.Error())
	}
	if c.MaxBodyBytes <= 0 {
		bad("MAX_BODY_BYTES", c.MaxBodyBytes, "must be positive")
	}
	if c.MaxBodyBytes > 16<<20 {
		bad("MAX_BODY_BYTES", c.MaxBodyBytes, "must be at most 16MiB")
	}
	if c.BatchSize < 0 {
		bad("BATCH_SIZE", c.BatchSize, "must be 0 (unset) or positive")
	}
	if c.BatchTime < 0 {
		bad("BATCH_TIME", c.BatchTime, "must be 0 (unset) or positive")
	}
	if c.BatchMaxWait <= 0 {
		bad("BATCH_MAX_WAIT", c.BatchMaxWait, "must be positive")
	}
	if c.Retries < -1 {
		bad("RETRIES", c.Retries, "must be -1 (retry until delivered), 0 or more")
	}
	if c.RetryInterval <= 0 {
		bad("RETRY_INTERVAL", c.RetryInterval, "must be positive")
	}
	if c.OnGiveUp != "dead-letter" && c.OnGiveUp != "discard" {
		bad("ON_GIVE_UP", c.OnGiveUp, "must be dead-letter or discard")
	}
	if c.SendTimeout <= 0 {
		bad("SEND_TIMEOUT", c.SendTimeout, "must be positive")
	}
	if c.SendConcurrency <= 0 {
		bad("SEND_CONCURRENCY", c.SendConcurrency, "must be positive")
	}
	if c.MemoryLimit < 0 || (c.MemoryLimit > 0 && c.MemoryLimit < minMemoryLimit) {
		bad("MEMORY_LIMIT", c.MemoryLimit, fmt.Sprintf("must be 0 (no limit) or at least %d (32MiB)", int64(minMemoryLimit)))
	}
	if c.MaxPendingBytes < 0 {
		bad("MAX_PENDING_BYTES", c.MaxPendingBytes, "must be 0 (no limit) or positive")
	}
	if c.MaxPendingBytes > 0 && c.MaxPendingBytes < c.MaxBodyBytes {
		bad("MAX_PENDING_BYTES", c.MaxPendingBytes, fmt.Sprintf(
			"must be 0 (no limit) or at least HOOKPROXY_MAX_BODY_BYTES (%d): a larger hook could never be accepted", int64(c.MaxBodyBytes)))
	}
	if c.OnStoreError != "forward" && c.OnStoreError != "reject" {
		bad("ON_STORE_ERROR", c.OnStoreError, "must be forward or reject")
	}
	if c.IdleTimeout <= 0 {
		bad("IDLE_TIMEOUT", c.IdleTimeout, "must be positive")
	}
	if c.DrainTimeout < 0 {
		bad("DRAIN_TIMEOUT", c.DrainTimeout, "must be 0 (no drain) or positive")
	}
	if _, err := c.level(); err != nil {
		bad("LOG_LEVEL", c.LogLevel, "must be debug, info, warn or error")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("LOG_FORMAT", c.LogFormat, "must be text or json")
	}
	if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
		bad("ADMIN_LISTEN", c.AdminListen, "must be an address such as 127.0.0.1:9090")
	}
	if c.AdminToken != "" && strings.TrimSpace(c.AdminToken) == "" {
		// The value is a secret, but white space reveals nothing.
		bad("ADMIN_TOKEN", fmt.Sprintf("%q", c.AdminToken), "is only white space (surrounding white space is ignored)")
	}
	if c.StallAfter < 0 {
		bad("STALL_AFTER", c.StallAfter, "must be 0 (no stall check) or positive")
	}
	c.validateHTTPS(bad)    // tls.go
	c.validateDelivery(bad) // delivery.go
	return errors.Join(errs...)
}

func (c *Config) level() (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(c.LogLevel))
	return l, err
}

// batching reports whether hooks are grouped into array batches.
func (c *Config) batching() bool { return c.BatchSize > 0 || c.BatchTime > 0 }

// Duration is a time.Duration that also accepts a bare number of seconds
// ("30" = 30s), as the old deliverer's settings were written.
type Duration time.Duration

// UnmarshalText parses "1m30s", "250ms" or a number of seconds.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration(v)
		return nil
	}
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(secs) {
		return fmt.Errorf("%q is neither a duration (such as 30s or 1m) nor a number of seconds", s)
	}
	if math.Abs(secs) >= math.MaxInt64/float64(time.Second) {
		return fmt.Errorf("%q is out of range (at most about 290 years)", s)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

func (d Duration) String() string { return time.Duration(d).String() }

// ByteSize is a number of bytes written as "1048576", "512KiB", "1MiB",
// "2GiB" (or KB/MB/GB, taken as powers of 1000).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// UnmarshalText parses a byte size.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	factor := int64(1)
	for _, u := range byteUnits {
		if len(s) > len(u.suffix) && strings.EqualFold(s[len(s)-len(u.suffix):], u.suffix) {
			s, factor = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.factor
			break
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		if n > math.MaxInt64/factor {
			return fmt.Errorf("%q is out of range (at most 8388607TiB)", string(text))
		}
		*b = ByteSize(n * factor)
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsNaN(v) {
		return fmt.Errorf("%q is not a byte size (such as 1048576, 512KiB or 1MiB)", string(text))
	}
	if v*float64(factor) >= math.MaxInt64 {
		return fmt.Errorf("%q is out of range (at most 8388607TiB)", string(text))
	}
	*b = ByteSize(v * float64(factor))
	return nil
}

func (b ByteSize) String() string { return strconv.FormatInt(int64(b), 10) }
