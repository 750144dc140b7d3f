package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"math/big"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

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
	// MaxCapturingBytes bounds the bodies of the hooks being captured at
	// once (proxy.Options.MaxCapturingBytes).
	MaxCapturingBytes ByteSize `env:"MAX_CAPTURING_BYTES" envDefault:"32MiB"`

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
	cfg, vars, unparsed, err := parseConfig(environ)
	// The settings that parsed are checked even when some did not, so
	// that one start names every bad setting, not one per restart.
	if verr := cfg.validate(vars, unparsed); err != nil || verr != nil {
		return Config{}, fmt.Errorf("configuration: %w", errors.Join(err, verr))
	}
	return cfg, nil
}

// parseConfig reads the settings without checking them; vars holds them
// as written, which errors quote. When some do not parse, err names each
// with its value, unparsed holds their names (prefix included) and cfg
// the settings that did parse (the others are zero).
func parseConfig(environ []string) (cfg Config, vars map[string]string, unparsed map[string]bool, err error) {
	vars = env.ToMap(environ)
	cfg, err = env.ParseAsWithOptions[Config](env.Options{Environment: trimmed(vars), Prefix: envPrefix})
	if err != nil {
		unparsed, err = nameVariables(err, vars)
	}
	return cfg, vars, unparsed, err
}

// untrimmed are the settings whose surrounding white space is kept:
// addresses and paths, where it is part of what was written.
var untrimmed = map[string]bool{
	envPrefix + "LISTEN": true, envPrefix + "ADMIN_LISTEN": true, envPrefix + "DATA_DIR": true,
	envPrefix + "CA_CERT_FILE": true, envPrefix + "CA_KEY_FILE": true, envPrefix + "CA_BUNDLE_FILE": true,
	envPrefix + "UPSTREAM_CA_FILE": true,
}

// trimmed is vars with the surrounding white space of every setting but
// the untrimmed ones dropped: a value read from a file, or written as a
// YAML block scalar, ends with a newline, and a number, a word or a
// secret kept with it would be refused (a secret on every request).
func trimmed(vars map[string]string) map[string]string {
	out := make(map[string]string, len(vars))
	for k, v := range vars {
		if strings.HasPrefix(k, envPrefix) && !untrimmed[k] {
			v = strings.TrimSpace(v)
		}
		out[k] = v
	}
	return out
}

// nameVariables rewrites env's parse errors, which name struct fields,
// to name the variable and the value the operator wrote; names is the
// set of those variables.
func nameVariables(err error, vars map[string]string) (names map[string]bool, _ error) {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return nil, err
	}
	names = map[string]bool{}
	out := make([]error, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			out = append(out, e)
			continue
		}
		name := pe.Name
		if f, ok := reflect.TypeFor[Config]().FieldByName(pe.Name); ok {
			name = envName(f)
		}
		names[name] = true
		out = append(out, fmt.Errorf("%s=%q: %w", name, vars[name], pe.Err))
	}
	return names, errors.Join(out...)
}

// hidden stands for a value that errors must not repeat (a secret, or a
// URL that may carry a token).
const hidden = redacted("(hidden)")

// redacted is printed as it is in validate's errors, where a string
// value would be quoted as written.
type redacted string

// validate checks the parsed values; vars holds them as written, which
// errors quote, and unparsed names those that did not parse (env's
// errors report them), which are not checked. A string value (word,
// address, list) is quoted with %q as the operator wrote it, so that
// white space and control characters show; a duration or a size is
// shown as written; a secret is passed as hidden and never shown.
func (c *Config) validate(vars map[string]string, unparsed map[string]bool) error {
	r := &reporter{vars: vars, unparsed: unparsed}
	bad := r.bad
	if err := checkListenAddress(c.Listen, ":8080"); err != nil {
		bad("LISTEN", c.Listen, err.Error())
	}
	if c.DataDir == "" {
		bad("DATA_DIR", c.DataDir, "must be a directory")
	} else if err := checkPath(c.DataDir); err != nil {
		bad("DATA_DIR", c.DataDir, err.Error())
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
	// The bounds below are measured against the body limit only when it
	// is one hookproxy takes: against a refused one, a bound that fits
	// every body limit allowed would be reported as too small.
	bodyOK := false
	switch {
	case c.MaxBodyBytes <= 0:
		bad("MAX_BODY_BYTES", c.MaxBodyBytes, "must be positive")
	case c.MaxBodyBytes > 16<<20:
		bad("MAX_BODY_BYTES", c.MaxBodyBytes, "must be at most 16MiB")
	default:
		bodyOK = true
	}
	if bodyOK && c.MaxCapturingBytes > 0 && c.MaxCapturingBytes < c.MaxBodyBytes {
		bad("MAX_CAPTURING_BYTES", c.MaxCapturingBytes, fmt.Sprintf(
			"must be 0 (no limit) or at least HOOKPROXY_MAX_BODY_BYTES (%d): a larger hook could never be captured", int64(c.MaxBodyBytes)))
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
	if bodyOK && c.MaxPendingBytes > 0 && c.MaxPendingBytes < c.MaxBodyBytes {
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
	if err := checkListenAddress(c.AdminListen, "127.0.0.1:9090"); err != nil {
		bad("ADMIN_LISTEN", c.AdminListen, err.Error())
	} else if checkListenAddress(c.Listen, "") == nil && sameListener(c.Listen, c.AdminListen) {
		bad("ADMIN_LISTEN", c.AdminListen, fmt.Sprintf(
			"must be another address than HOOKPROXY_LISTEN (%q): both cannot listen on one port", c.Listen))
	}
	// blank reports, and refuses, a secret that is empty once trimmed but
	// was set: without the check the token, the credentials or the
	// signing would silently be off. White space reveals nothing of a
	// secret.
	blank := func(name, value string) bool {
		if value != "" || vars[envPrefix+name] == "" {
			return false
		}
		bad(name, value, "is only white space (surrounding white space is ignored)")
		return true
	}
	checkSecret := func(name, value string) {
		if !blank(name, value) && strings.ContainsFunc(value, unicode.IsControl) {
			bad(name, hidden, "holds a control character (a line break, a tab...), which no HTTP client can send")
		}
	}
	checkSecret("ADMIN_TOKEN", c.AdminToken)
	checkSecret("PROXY_AUTH", c.ProxyAuth)
	// Its keys are checked with the delivery settings.
	blank("SIGNING_SECRET", strings.Join(c.SigningSecret, ","))
	if c.StallAfter < 0 {
		bad("STALL_AFTER", c.StallAfter, "must be 0 (no stall check) or positive")
	}
	c.validateHTTPS(bad)    // tls.go
	c.validateDelivery(bad) // delivery.go
	return r.err()
}

// reporter collects the errors of validate; vars holds the settings as
// written, unparsed the names (prefix included) of those that did not
// parse.
type reporter struct {
	vars     map[string]string
	unparsed map[string]bool
	errs     []error
}

// bad records that setting name (without the prefix) has a bad value:
// value is the parsed value, or hidden for a secret. Nothing is recorded
// for a setting that did not parse, whose parse error says why, nor for
// a check that names one in why (one setting checked against another):
// it judged the zero that stands for it, not what the operator wrote.
func (r *reporter) bad(name string, value any, why string) {
	for u := range r.unparsed {
		if u == envPrefix+name || strings.Contains(why, u) {
			return
		}
	}
	raw, set := r.vars[envPrefix+name]
	switch v := value.(type) {
	case Duration, ByteSize:
		if raw := strings.TrimSpace(raw); raw != "" {
			value = raw
		}
	case string:
		if !set || raw == "" {
			raw = v
		}
		value = strconv.Quote(raw)
	}
	r.errs = append(r.errs, fmt.Errorf("%s%s=%v: %s", envPrefix, name, value, why))
}

func (r *reporter) err() error { return errors.Join(r.errs...) }

// checkListenAddress checks a listen address without listening: it is
// host:port (example shows one), and a numeric port is one a listener can
// have. A named port (":http") is left to the listener.
func checkListenAddress(addr, example string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be an address such as %s", example)
	}
	if port == "" {
		// The listener would take any free port, which nobody is told
		// of: ":${PORT}" with PORT unset, say. Port 0 says it on purpose.
		return fmt.Errorf("has no port (an address such as %s; port 0 lets the system choose)", example)
	}
	if digits := strings.TrimPrefix(port, "-"); digits != "" && strings.Trim(digits, "0123456789") == "" {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("port %s is out of range (0 to %d)", port, math.MaxUint16)
		}
	}
	return nil
}

// sameListener reports whether the listen addresses a and b (both
// checked by checkListenAddress) can never listen at once: the same port,
// not 0 (the system's choice), on the same host, or on every address for
// either of them (Linux refuses 127.0.0.1:8080 while :8080 listens, and
// Go listens on :: for 0.0.0.0, so on both families).
func sameListener(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	na, errA := strconv.ParseUint(pa, 10, 16)
	nb, errB := strconv.ParseUint(pb, 10, 16)
	switch {
	case errA == nil && errB == nil:
		if na != nb || na == 0 {
			return false
		}
	case !strings.EqualFold(pa, pb) || pa == "":
		return false // a named port is left to the listener
	}
	wildcard := func(h string) bool {
		ip, err := netip.ParseAddr(h)
		return h == "" || (err == nil && ip.IsUnspecified())
	}
	if wildcard(ha) || wildcard(hb) {
		return true
	}
	ia, errA := netip.ParseAddr(ha)
	ib, errB := netip.ParseAddr(hb)
	if errA == nil && errB == nil {
		return ia.Unmap() == ib.Unmap()
	}
	return strings.EqualFold(ha, hb)
}

// checkPath refuses a path setting that is only white space or holds a
// control character. Paths keep their surrounding white space, so a
// value read from a file or written as a YAML block scalar ends with a
// line break: the store or the bundle would silently go to a new
// directory or file of that name, next to the one the operator meant.
func checkPath(path string) error {
	switch {
	case strings.TrimSpace(path) == "":
		return errors.New("is only white space")
	case strings.ContainsFunc(path, unicode.IsControl):
		return errors.New("holds a control character (a line break, a tab...), which a path setting may not")
	}
	return nil
}

// checkReadable checks that a file named by a setting can be opened for
// reading, so that a wrong path stops the start before anything is
// made.
func checkReadable(path string) error {
	if err := checkPath(path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the error already
		}
		return fmt.Errorf("cannot be read: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return errors.New("is a directory, not a file")
	}
	return nil
}

// envNames is the set of variables the env tags of T's fields name,
// prefix included.
func envNames[T any]() map[string]bool {
	names := map[string]bool{}
	t := reflect.TypeFor[T]()
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("env") != "" {
			names[envName(f)] = true
		}
	}
	return names
}

// envName is the variable a field's env tag names, prefix included.
func envName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return envPrefix + name
}

// knownSettings is every HOOKPROXY_ variable the server reads: the env
// tags of Config.
func knownSettings() map[string]bool { return envNames[Config]() }

// unknownSettings lists, sorted, the HOOKPROXY_ variables of vars that
// hookproxy does not read, each followed by the known name closest to it
// when one is close (a misspelling): "HOOKPROXY_SIGNING_SECRETS (did you
// mean HOOKPROXY_SIGNING_SECRET?)". They are not refused: Kubernetes sets
// HOOKPROXY_SERVICE_HOST, HOOKPROXY_PORT_9090_TCP... for a Service named
// hookproxy (left out here), and the command line reads
// HOOKPROXY_ADMIN_URL.
func unknownSettings(vars map[string]string) []string {
	known := knownSettings()
	for name := range envNames[cliConfig]() {
		known[name] = true
	}
	var out []string
	for name := range vars {
		if !strings.HasPrefix(name, envPrefix) || known[name] || serviceLink(name) {
			continue
		}
		if near := closestName(name, known); near != "" {
			name += " (did you mean " + near + "?)"
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// serviceLink reports whether name is one of the variables Kubernetes
// sets for a Service named hookproxy (enableServiceLinks).
func serviceLink(name string) bool {
	rest := strings.TrimPrefix(name, envPrefix)
	return rest == "PORT" || strings.HasPrefix(rest, "PORT_") || strings.HasPrefix(rest, "SERVICE_")
}

// closestName is the name of known nearest to name, ignoring case, when
// it is a few edits away (at most 2, or a quarter of a long name); "" when
// none is.
func closestName(name string, known map[string]bool) string {
	bare := strings.ToUpper(strings.TrimPrefix(name, envPrefix))
	best, bestDist := "", max(2, len(bare)/4)+1
	for _, k := range slices.Sorted(maps.Keys(known)) {
		if d := editDistance(bare, strings.TrimPrefix(k, envPrefix)); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// level is LOG_LEVEL's slog level: one of the four names, in any case.
// slog's own parser takes offsets too ("error+100"), which would silence
// every line the README lists.
func (c *Config) level() (slog.Level, error) {
	switch strings.ToLower(c.LogLevel) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q", c.LogLevel)
}

// batching reports whether hooks are grouped into array batches.
func (c *Config) batching() bool { return c.BatchSize > 0 || c.BatchTime > 0 }

// Duration is a time.Duration that also accepts a bare number of seconds
// ("30" = 30s), as the old deliverer's settings were written.
type Duration time.Duration

// UnmarshalText parses "1m30s", "250ms" or a number of seconds written
// in decimal ("30", "1.5").
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration(v)
		return nil
	}
	if !isDecimal(s) {
		return fmt.Errorf("%q is neither a duration (such as 30s or 1m) nor a number of seconds (such as 30 or 1.5)", s)
	}
	// A number of seconds is that number with the unit s, read exactly.
	v, err := time.ParseDuration(s + "s")
	if err != nil {
		return fmt.Errorf("%q is out of range (at most about 290 years)", s)
	}
	*d = Duration(v)
	return nil
}

// isDecimal reports whether s is a number written in plain decimal, as
// the integer settings are: an optional sign, then digits with at most
// one decimal point ("30", "1.5", ".5", "010" is ten). strconv.ParseFloat
// also takes "1_000", "0x1p4", "1e3" and "Inf", which a setting would
// read with a meaning the operator may not have meant.
func isDecimal(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	digits, point := 0, false
	for _, c := range []byte(s) {
		switch {
		case '0' <= c && c <= '9':
			digits++
		case c == '.' && !point:
			point = true
		default:
			return false
		}
	}
	return digits > 0
}

func (d Duration) String() string { return time.Duration(d).String() }

// Set makes *Duration a flag.Value: a flag takes the forms a setting does.
func (d *Duration) Set(s string) error { return d.UnmarshalText([]byte(s)) }

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
	if !isDecimal(s) {
		return fmt.Errorf("%q is not a byte size (such as 1048576, 512KiB or 1MiB)", string(text))
	}
	// Read exactly, as a fraction: in floating point 2.01 is a little
	// less than 2.01, and 2.01KB would be 2009 bytes.
	v, ok := new(big.Rat).SetString(s)
	if !ok || v.Sign() < 0 {
		return fmt.Errorf("%q is not a byte size (such as 1048576, 512KiB or 1MiB)", string(text))
	}
	v.Mul(v, new(big.Rat).SetInt64(factor))
	if v.Cmp(new(big.Rat).SetInt64(math.MaxInt64)) > 0 {
		return fmt.Errorf("%q is out of range (at most 8388607TiB)", string(text))
	}
	// A fraction of a byte would be taken as 0, which for a limit means
	// none at all: "0.5B" must not turn the limit off.
	if v.Sign() > 0 && v.Cmp(big.NewRat(1, 1)) < 0 {
		return fmt.Errorf("%q is less than one byte but not 0", string(text))
	}
	*b = ByteSize(new(big.Int).Quo(v.Num(), v.Denom()).Int64())
	return nil
}

func (b ByteSize) String() string { return strconv.FormatInt(int64(b), 10) }
