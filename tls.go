package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"hookproxy/mitm"
	"hookproxy/proxy"
)

// HTTPS: the CA that signs intercepted tunnels, the trust bundle for the
// app, and the roots that verify receivers (pass-through and delivery).

// Where hookproxy keeps its generated CA and, by default, the bundle.
const (
	caDirName      = "ca"
	bundleFileName = "ca-bundle.pem"
)

// httpsSetup is what serve wires into the proxy, the sender and the
// admin listener.
type httpsSetup struct {
	ca         *mitm.Authority
	bundleFile string
	// upstreamTLS verifies receivers: the system roots plus
	// HOOKPROXY_UPSTREAM_CA_FILE. Nil: Go's defaults (the system roots).
	upstreamTLS *tls.Config
}

// setupHTTPS opens (or generates) the CA, writes the bundle for the app
// and loads the upstream roots.
func setupHTTPS(cfg Config, log *slog.Logger) (*httpsSetup, error) {
	ca, err := openCA(cfg)
	if err != nil {
		return nil, err
	}
	hs := &httpsSetup{ca: ca, bundleFile: cfg.caBundleFile()}
	bundle, err := caBundle(ca, log)
	if err != nil {
		return nil, err
	}
	if err := mitm.WriteFile(hs.bundleFile, bundle, 0o644); err != nil {
		return nil, fmt.Errorf("CA bundle (HOOKPROXY_CA_BUNDLE_FILE): %w", err)
	}
	if hs.upstreamTLS, err = upstreamTLSConfig(cfg.UpstreamCAFile); err != nil {
		return nil, err
	}
	mitmHosts := "*"
	if len(cfg.MITMHosts) > 0 {
		mitmHosts = strings.Join(cfg.MITMHosts, ",")
	}
	if left := time.Until(ca.Certificate().NotAfter); left < mitm.DefaultLeafValidity {
		// Leaves are cut to the CA's expiry; after it, every intercepted
		// handshake fails.
		log.Warn("the interception CA expires soon: replace it (and give the app the new bundle)",
			"ca", ca.Source(), "ca_expires", ca.Certificate().NotAfter.UTC().Format(time.RFC3339), "left", left.Round(time.Hour).String())
	}
	log.Info("HTTPS interception ready", "ca", ca.Source(), "ca_subject", ca.Certificate().Subject.CommonName,
		"ca_generated", ca.Generated(), "ca_created", ca.Created(), "ca_expires", ca.Certificate().NotAfter.UTC().Format(time.DateOnly),
		"bundle", hs.bundleFile, "mitm_hosts", mitmHosts, "upstream_ca", cfg.UpstreamCAFile)
	return hs, nil
}

// caBundleFile is where the bundle for the app is written.
func (c *Config) caBundleFile() string {
	if c.CABundleFile != "" {
		return c.CABundleFile
	}
	return filepath.Join(c.DataDir, bundleFileName)
}

// openCA loads the operator's CA, or the one hookproxy generated in the
// data directory (generating it on first use).
func openCA(cfg Config) (*mitm.Authority, error) {
	dir := filepath.Join(cfg.DataDir, caDirName)
	ca, err := mitm.Open(mitm.Options{Dir: dir, CertFile: cfg.CACertFile, KeyFile: cfg.CAKeyFile})
	if err != nil {
		if cfg.CACertFile != "" {
			return nil, fmt.Errorf("CA from HOOKPROXY_CA_CERT_FILE and HOOKPROXY_CA_KEY_FILE: %w", err)
		}
		return nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	return ca, nil
}

// caBundle is the system roots followed by the CA. Without system roots
// the bundle still works for every intercepted host, so that is a
// warning, not an error.
func caBundle(ca *mitm.Authority, log *slog.Logger) ([]byte, error) {
	roots, _, err := mitm.ReadSystemRoots(mitm.SystemRootFiles())
	if errors.Is(err, mitm.ErrNoSystemRoots) {
		log.Warn("no system root certificates found: the CA bundle holds only hookproxy's CA, "+
			"so the app can reach intercepted hosts only", "looked_in", strings.Join(mitm.SystemRootFiles(), ","))
	} else if err != nil {
		return nil, err
	}
	return ca.Bundle(roots), nil
}

// upstreamTLSConfig is the client TLS configuration that verifies
// receivers: nil (Go's defaults, the system roots) without an extra CA
// file, the system roots plus the file's certificates with one.
func upstreamTLSConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("HOOKPROXY_UPSTREAM_CA_FILE: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("HOOKPROXY_UPSTREAM_CA_FILE=%s: no PEM certificate in it", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// validateHTTPS checks the HTTPS settings; bad is validate's reporter.
func (c *Config) validateHTTPS(bad func(name string, value any, why string)) {
	c.validateCA(bad)
	if err := proxy.CheckHostPatterns(c.MITMHosts); err != nil {
		bad("MITM_HOSTS", strings.Join(c.MITMHosts, ","), err.Error())
	}
	if c.ProxyAuth != "" {
		// An empty password is a slip (a variable left unset in
		// "user:$PASS"), not credentials.
		if user, pass, ok := strings.Cut(c.ProxyAuth, ":"); !ok || user == "" || pass == "" {
			// The value is a secret: not repeated in the error.
			bad("PROXY_AUTH", hidden, "must be user:password, neither empty")
		}
	}
	// Files that are read at start are checked before the data
	// directory, the store and a CA are made.
	if c.UpstreamCAFile != "" {
		if err := checkReadable(c.UpstreamCAFile); err != nil {
			bad("UPSTREAM_CA_FILE", c.UpstreamCAFile, err.Error())
		}
	}
	// The bundle replaces what is at its path at every start: on a file
	// hookproxy reads, the CA's key say, that file would be lost for
	// good, and the next start would fail for want of it.
	bundle := c.caBundleFile()
	if c.CABundleFile != "" {
		if err := checkPath(c.CABundleFile); err != nil {
			bad("CA_BUNDLE_FILE", c.CABundleFile, err.Error())
		}
	}
	caDir := filepath.Join(c.DataDir, caDirName)
	for _, f := range []struct{ what, path string }{
		{"HOOKPROXY_CA_CERT_FILE", c.CACertFile},
		{"HOOKPROXY_CA_KEY_FILE", c.CAKeyFile},
		{"HOOKPROXY_UPSTREAM_CA_FILE", c.UpstreamCAFile},
		{"the generated CA's certificate", filepath.Join(caDir, mitm.CertFileName)},
		{"the generated CA's key", filepath.Join(caDir, mitm.KeyFileName)},
	} {
		if sameFile(bundle, f.path) {
			bad("CA_BUNDLE_FILE", bundle, fmt.Sprintf("is %s (%s): the bundle written there at each start would replace it", f.what, f.path))
		}
	}
}

// sameFile reports whether the paths a and b name one file: the same
// path once absolute and clean, or one file reached another way (a
// link).
func sameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	if errA == nil && errB == nil && absA == absB {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// validateCA checks the settings of the interception CA, all that the ca
// command reads besides HOOKPROXY_DATA_DIR. The bundle file is written,
// not read.
func (c *Config) validateCA(bad func(name string, value any, why string)) {
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		bad("CA_CERT_FILE", c.CACertFile, "and HOOKPROXY_CA_KEY_FILE go together: set both or neither")
	}
	for _, f := range []struct{ name, path string }{{"CA_CERT_FILE", c.CACertFile}, {"CA_KEY_FILE", c.CAKeyFile}} {
		if f.path == "" {
			continue
		}
		if err := checkReadable(f.path); err != nil {
			bad(f.name, f.path, err.Error())
		}
	}
}

const caUsage = `usage: hookproxy ca [--bundle]

Prints the CA certificate hookproxy signs intercepted HTTPS with (PEM): the
operator's (HOOKPROXY_CA_CERT_FILE) or the one in HOOKPROXY_DATA_DIR, which
is generated now if there is none yet, as the first start would.

  --bundle   print the bundle for the app instead: the system roots and the
             CA, what hookproxy writes to HOOKPROXY_CA_BUNDLE_FILE
`

// caSettings are the settings hookproxy ca reads.
var caSettings = []string{"DATA_DIR", "CA_CERT_FILE", "CA_KEY_FILE"}

// onlySettings is environ without the HOOKPROXY_ settings not named in
// keep (names without the prefix); other variables stay.
func onlySettings(environ, keep []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || slices.Contains(keep, strings.TrimPrefix(name, envPrefix)) {
			out = append(out, kv)
		}
	}
	return out
}

// runCA is the "ca" command.
func runCA(args []string, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ca", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bundle := fs.Bool("bundle", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, caUsage)
			return nil
		}
		fmt.Fprint(stderr, caUsage)
		return usageErr("ca: %v", err)
	}
	if fs.NArg() > 0 {
		fmt.Fprint(stderr, caUsage)
		return usageErr("ca: unexpected argument %q", fs.Arg(0))
	}
	// Only what the command reads is parsed and checked: a setting of
	// the server (a file it reads at start, a listen address, a number
	// written wrong) does not stop it.
	cfg, vars, _, err := parseConfig(onlySettings(environ, caSettings))
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	r := &reporter{vars: vars}
	if cfg.DataDir == "" && cfg.CACertFile == "" {
		r.bad("DATA_DIR", cfg.DataDir, "must be a directory")
	} else if err := checkPath(cfg.DataDir); cfg.CACertFile == "" && err != nil {
		r.bad("DATA_DIR", cfg.DataDir, err.Error())
	}
	cfg.validateCA(r.bad)
	if err := r.err(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	ca, err := openCA(cfg)
	if err != nil {
		return err
	}
	if ca.Created() {
		// Not an error, but worth a word: run without the server's
		// HOOKPROXY_DATA_DIR, this is not the CA the server uses.
		fmt.Fprintf(stderr, "hookproxy: generated a new CA in %s (the server uses the CA of its HOOKPROXY_DATA_DIR)\n",
			filepath.Join(cfg.DataDir, caDirName))
	}
	out := ca.CertPEM()
	if *bundle {
		log := slog.New(slog.NewTextHandler(stderr, nil))
		if out, err = caBundle(ca, log); err != nil {
			return err
		}
	}
	_, err = stdout.Write(out)
	return err
}
