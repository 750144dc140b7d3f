package mitm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(tb testing.TB, opts Options) *Authority {
	tb.Helper()
	a, err := Open(opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return a
}

func TestGeneratedCA(t *testing.T) {
	clk := newClock()
	dir := filepath.Join(t.TempDir(), "data", "ca")
	a := open(t, Options{Dir: dir, Now: clk.Now})
	c := a.Certificate()
	if !a.Generated() || a.Source() != filepath.Join(dir, CertFileName) {
		t.Errorf("Generated %t, Source %q", a.Generated(), a.Source())
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: IsCA %t valid %t maxPathLen %d zero %t", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("KeyUsage %b lacks CertSign", c.KeyUsage)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if !strings.Contains(c.Subject.CommonName, "hookproxy") || c.Subject.Organization[0] != "hookproxy" {
		t.Errorf("subject %q does not say hookproxy", c.Subject)
	}
	if got, want := c.NotAfter, clk.Now().Add(DefaultCAValidity).Truncate(time.Second); !got.Equal(want) {
		t.Errorf("NotAfter %v, want %v", got, want)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	for name, want := range map[string]fs.FileMode{"": 0o700 | fs.ModeDir, KeyFileName: 0o600, CertFileName: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", filepath.Join(dir, name), fi.Mode(), want)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the CA directory (no temporary left)", len(entries))
	}

	// A later start loads the same CA.
	b := open(t, Options{Dir: dir, Now: clk.Now})
	if !bytes.Equal(a.CertPEM(), b.CertPEM()) || !b.Generated() {
		t.Fatalf("second Open made a different CA")
	}
	if !publicKeysEqual(b.key.Public(), a.key.Public()) {
		t.Fatalf("second Open loaded another key")
	}
}

// TestConcurrentCreate: processes that start together on an empty data
// directory end up with one CA between them.
func TestConcurrentCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	const n = 8
	pems := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := Open(Options{Dir: dir})
			if err == nil {
				pems[i] = a.CertPEM()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Open %d: %v", i, errs[i])
		}
		if !bytes.Equal(pems[i], pems[0]) {
			t.Fatalf("Open %d got another CA", i)
		}
	}
}

// TestIncompleteCADirRefused: a CA directory that lost its key is not
// silently replaced by a new CA the app does not trust.
func TestIncompleteCADirRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a := open(t, Options{Dir: dir})
	if err := os.Remove(filepath.Join(dir, KeyFileName)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "remove the directory") {
		t.Fatalf("Open = %v, want an error that says how to start over", err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, CertFileName))
	if !bytes.Equal(got, a.CertPEM()) {
		t.Fatal("the CA certificate was replaced")
	}
}

// operatorTemplate is the certificate of a CA an operator could give:
// a root allowed to sign certificates, valid 2020 to 2040.
func operatorTemplate() *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "Operator Root"},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
}

// operatorCA makes a CA as an operator would, with key written in the
// given PEM encoding, and returns the file names.
func operatorCA(tb testing.TB, key crypto.Signer, keyType string, tmpl *x509.Certificate) (certFile, keyFile string, cert *x509.Certificate) {
	tb.Helper()
	if tmpl == nil {
		tmpl = operatorTemplate()
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	var keyDER []byte
	switch keyType {
	case "PRIVATE KEY":
		keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	case "EC PRIVATE KEY":
		keyDER, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	case "RSA PRIVATE KEY":
		keyDER = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	}
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: keyType, Bytes: keyDER}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return certFile, keyFile, cert
}

func TestOperatorCA(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tt := range []struct {
		name    string
		key     crypto.Signer
		keyType string
	}{
		{"pkcs8 ecdsa", ecKey, "PRIVATE KEY"},
		{"sec1 ecdsa", ecKey, "EC PRIVATE KEY"},
		{"pkcs1 rsa", rsaKey, "RSA PRIVATE KEY"},
		{"pkcs8 rsa", rsaKey, "PRIVATE KEY"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile, caCert := operatorCA(t, tt.key, tt.keyType, nil)
			dir := filepath.Join(t.TempDir(), "ca")
			a := open(t, Options{Dir: dir, CertFile: certFile, KeyFile: keyFile, Now: newClock().Now})
			if a.Generated() || !a.Certificate().Equal(caCert) || a.Source() != certFile {
				t.Fatalf("Open did not load the operator's CA")
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a CA was generated although the operator gave one")
			}
			leaf, err := a.Leaf("hooks.example.com")
			if err != nil {
				t.Fatal(err)
			}
			verifyLeaf(t, leaf, caCert, "hooks.example.com", newClock().Now())
		})
	}
}

func TestOperatorCARefused(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	certFile, keyFile, _ := operatorCA(t, key, "PRIVATE KEY", nil)
	_, otherKeyFile, _ := operatorCA(t, other, "PRIVATE KEY", nil)
	notCA, notCAKey, _ := operatorCA(t, key, "PRIVATE KEY", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		BasicConstraintsValid: true,
	})
	expired, expiredKey, _ := operatorCA(t, key, "PRIVATE KEY", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old"},
		NotBefore: time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	})
	// Clients check the extended key usage along the chain: a CA without
	// serverAuth signs leaves Go and OpenSSL reject.
	clientAuth := operatorTemplate()
	clientAuth.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	clientAuthCA, clientAuthKey, _ := operatorCA(t, key, "PRIVATE KEY", clientAuth)
	// OpenSSL 3.0 at Debian's security level 2 rejects every leaf an
	// RSA-1024 CA signs ("CA certificate key too weak").
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakCA, weakKey, _ := operatorCA(t, weak, "RSA PRIVATE KEY", nil)
	for _, tt := range []struct {
		name       string
		cert, key  string
		wantSubstr string
	}{
		{"cert without key", certFile, "", "both or neither"},
		{"key without cert", "", keyFile, "both or neither"},
		{"wrong key", certFile, otherKeyFile, "does not belong"},
		{"not a CA", notCA, notCAKey, "not a CA"},
		{"expired", expired, expiredKey, "expired"},
		{"no serverAuth", clientAuthCA, clientAuthKey, "serverAuth"},
		{"RSA-1024", weakCA, weakKey, "1024 bits"},
		{"missing file", certFile + ".nope", keyFile, "no such file"},
		{"key file is a certificate", certFile, certFile, "no PEM private key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(Options{Dir: t.TempDir(), CertFile: tt.cert, KeyFile: tt.key, Now: newClock().Now})
			if err == nil || !strings.Contains(err.Error(), tt.wantSubstr) {
				t.Fatalf("Open = %v, want an error with %q", err, tt.wantSubstr)
			}
		})
	}
}

// verifyLeaf checks leaf the way a TLS client does, for host.
func verifyLeaf(tb testing.TB, leaf *tls.Certificate, ca *x509.Certificate, host string, now time.Time) {
	tb.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	c, err := x509.ParseCertificate(leaf.Certificate[0])
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: now}); err != nil {
		tb.Fatalf("leaf for %s does not verify: %v", host, err)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		tb.Errorf("leaf key is %T, want ECDSA P-256", c.PublicKey)
	}
	if len(leaf.Certificate) < 2 || !bytes.Equal(leaf.Certificate[1], ca.Raw) {
		tb.Errorf("leaf chain does not carry the CA")
	}
	if c.NotAfter.After(ca.NotAfter) {
		tb.Errorf("leaf outlives its CA: %v > %v", c.NotAfter, ca.NotAfter)
	}
}

func TestLeafNamesAndAddresses(t *testing.T) {
	clk := newClock()
	a := open(t, Options{Dir: filepath.Join(t.TempDir(), "ca"), Now: clk.Now})
	for _, tt := range []struct {
		host, verifyAs string
		ip             bool
	}{
		{"hooks.example.com", "hooks.example.com", false},
		{"Hooks.Example.COM.", "hooks.example.com", false},
		{"127.0.0.1", "127.0.0.1", true},
		{"[::1]", "::1", true},
		{"::1", "::1", true},
		{"localhost", "localhost", false},
	} {
		t.Run(tt.host, func(t *testing.T) {
			leaf, err := a.Leaf(tt.host)
			if err != nil {
				t.Fatal(err)
			}
			verifyLeaf(t, leaf, a.Certificate(), tt.verifyAs, clk.Now())
			c := leaf.Leaf
			if tt.ip && (len(c.IPAddresses) != 1 || len(c.DNSNames) != 0) {
				t.Errorf("IP host: IPAddresses %v, DNSNames %v; want one IP SAN only", c.IPAddresses, c.DNSNames)
			}
			if !tt.ip && (len(c.DNSNames) != 1 || len(c.IPAddresses) != 0) {
				t.Errorf("name host: DNSNames %v, IPAddresses %v; want one DNS SAN only", c.DNSNames, c.IPAddresses)
			}
			if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || c.IsCA {
				t.Errorf("leaf usage: ext %v, CA %t", c.ExtKeyUsage, c.IsCA)
			}
		})
	}
	for _, bad := range []string{"", "*.example.com", "*"} {
		if leaf, err := a.Leaf(bad); err == nil {
			t.Errorf("Leaf(%q) issued a certificate for %v", bad, leaf.Leaf.DNSNames)
		}
	}
}

func TestLeafCacheAndRenewal(t *testing.T) {
	clk := newClock()
	a := open(t, Options{Dir: filepath.Join(t.TempDir(), "ca"), Now: clk.Now, LeafValidity: 10 * 24 * time.Hour})
	first, _ := a.Leaf("a.example")
	again, _ := a.Leaf("A.example")
	if first != again || a.issued != 1 {
		t.Fatalf("second call signed again (issued %d)", a.issued)
	}
	clk.advance(8 * 24 * time.Hour) // one day before renewal is due
	if c, _ := a.Leaf("a.example"); c != first {
		t.Fatal("renewed too early")
	}
	clk.advance(24 * time.Hour) // a day before expiry
	renewed, err := a.Leaf("a.example")
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || a.issued != 2 {
		t.Fatalf("not renewed a day before expiry (issued %d)", a.issued)
	}
	verifyLeaf(t, renewed, a.Certificate(), "a.example", clk.Now())
}

// A leaf cached before the wall clock stepped back by more than its
// backdating is not yet valid for the app, which checks it by the same
// clock: a new one is signed rather than fail every handshake (and lose
// the hooks inside) until the old one's renewal. The same for a step
// forward past its expiry.
func TestLeafAfterClockStep(t *testing.T) {
	for _, step := range []time.Duration{-2 * time.Hour, 11 * 24 * time.Hour} {
		clk := newClock()
		a := open(t, Options{Dir: filepath.Join(t.TempDir(), "ca"), Now: clk.Now, LeafValidity: 10 * 24 * time.Hour, CAValidity: 365 * 24 * time.Hour})
		clk.advance(24 * time.Hour) // the CA made a day ago stays valid through the step
		first, err := a.Leaf("a.example")
		if err != nil {
			t.Fatal(err)
		}
		clk.advance(step)
		got, err := a.Leaf("a.example")
		if err != nil {
			t.Fatal(err)
		}
		if got == first {
			t.Errorf("step %v: the cached leaf, valid %v to %v, is served at %v", step, first.Leaf.NotBefore, first.Leaf.NotAfter, clk.Now())
			continue
		}
		verifyLeaf(t, got, a.Certificate(), "a.example", clk.Now())
	}
}

// TestLeafNoStampede: many handshakes for a host that is not cached yet
// share one signing. The signing waits until every other caller is
// waiting for it (or a deadline, when they sign their own).
func TestLeafNoStampede(t *testing.T) {
	a := open(t, Options{Dir: filepath.Join(t.TempDir(), "ca")})
	const n = 64
	a.beforeIssue = func() {
		waiting := func() int {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.waiting
		}
		for deadline := time.Now().Add(5 * time.Second); waiting() < n-1 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	certs := make([]*tls.Certificate, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			c, err := a.Leaf("10.1.2.3")
			if err != nil {
				t.Error(err)
			}
			certs[i] = c
		})
	}
	close(start)
	wg.Wait()
	if a.issued != 1 {
		t.Fatalf("%d leaves signed for one host, want 1", a.issued)
	}
	for i := range certs {
		if certs[i] != certs[0] {
			t.Fatalf("caller %d got another certificate", i)
		}
	}
}

func TestLeafCacheBounded(t *testing.T) {
	a := open(t, Options{Dir: filepath.Join(t.TempDir(), "ca"), CacheSize: 3})
	for i := range 10 {
		if _, err := a.Leaf("h" + string(rune('a'+i)) + ".example"); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	n := len(a.cache)
	a.mu.Unlock()
	if n > 3 {
		t.Fatalf("cache holds %d leaves, want at most 3", n)
	}
}

// TestTLSConfigHandshake: a client that trusts only the CA completes a
// handshake with the server configuration, for a name and for an IP
// address (python requests sends no SNI for an IP).
func TestTLSConfigHandshake(t *testing.T) {
	a := open(t, Options{Dir: filepath.Join(t.TempDir(), "ca")})
	roots := x509.NewCertPool()
	roots.AddCert(a.Certificate())
	for _, host := range []string{"hooks.example.com", "127.0.0.1"} {
		t.Run(host, func(t *testing.T) {
			cfg, err := a.TLSConfig(host)
			if err != nil {
				t.Fatal(err)
			}
			// net.Pipe has no buffer: the close_notify of one side
			// would wait for a reader that is gone.
			sc, cc := net.Pipe()
			srv := tls.Server(sc, cfg)
			cli := tls.Client(cc, &tls.Config{RootCAs: roots, ServerName: host})
			done := make(chan error, 1)
			go func() { done <- srv.Handshake() }()
			if err := cli.Handshake(); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatalf("server handshake: %v", err)
			}
			_ = sc.Close()
			_ = cc.Close()
		})
	}
}

func TestBundle(t *testing.T) {
	dir := t.TempDir()
	sysCA := open(t, Options{Dir: filepath.Join(dir, "sys")})
	sysFile := filepath.Join(dir, "system.crt")
	// A system file as Debian writes it has no comments; others have
	// text between the blocks, which the bundle drops.
	if err := os.WriteFile(sysFile, append([]byte("# a comment\n"), sysCA.CertPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.crt")
	_ = os.WriteFile(empty, []byte("nothing here\n"), 0o644)

	roots, path, err := ReadSystemRoots([]string{filepath.Join(dir, "missing.crt"), empty, sysFile})
	if err != nil || path != sysFile {
		t.Fatalf("ReadSystemRoots = %q, %v; want %s", path, err, sysFile)
	}
	if _, _, err := ReadSystemRoots([]string{filepath.Join(dir, "missing.crt"), empty}); !errors.Is(err, ErrNoSystemRoots) {
		t.Fatalf("ReadSystemRoots without roots = %v, want ErrNoSystemRoots", err)
	}

	a := open(t, Options{Dir: filepath.Join(dir, "ca")})
	bundle := a.Bundle(roots)
	var subjects []string
	for rest := bundle; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, c.Subject.CommonName)
	}
	want := []string{sysCA.Certificate().Subject.CommonName, a.Certificate().Subject.CommonName}
	if strings.Join(subjects, "|") != strings.Join(want, "|") {
		t.Fatalf("bundle holds %q, want %q", subjects, want)
	}

	out := filepath.Join(dir, "shared", "ca-bundle.pem")
	if err := WriteFile(out, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(out, bundle, 0o644); err != nil { // replacing works too
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	fi, _ := os.Stat(out)
	if err != nil || !bytes.Equal(got, bundle) || fi.Mode() != 0o644 {
		t.Fatalf("written bundle: %v, mode %v, equal %t", err, fi.Mode(), bytes.Equal(got, bundle))
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 1 {
		t.Errorf("%d files next to the bundle, want no temporary left", len(entries))
	}
}

// TestSystemRootFilesOnThisMachine: the bundle can be built here (the
// end-to-end tests rely on it).
func TestSystemRootFilesOnThisMachine(t *testing.T) {
	roots, path, err := ReadSystemRoots(SystemRootFiles())
	if errors.Is(err, ErrNoSystemRoots) {
		t.Fatal("no system roots installed (Debian: ca-certificates); the HTTPS tests need them")
	}
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatalf("%s: no certificate in what was read", path)
	}
}
