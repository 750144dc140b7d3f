// Package mitm is hookproxy's certificate authority for intercepting HTTPS.
//
// An Authority holds a CA certificate and its private key: an operator's,
// loaded from PEM files, or one generated on first use and kept in a
// directory, so that every later start signs with the same CA and the
// app's trust in it survives restarts. It issues a leaf certificate for
// each intercepted host on demand, caches it until shortly before it
// expires, and issues it once however many connections ask at the same
// time. Bundle and WriteFile build the file the app points
// REQUESTS_CA_BUNDLE at.
//
// The package reads no environment variable: callers pass every path.
package mitm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Defaults applied by Open to zero Options fields.
const (
	// DefaultCAValidity is how long a generated CA is valid.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultLeafValidity is how long an issued leaf certificate is
	// valid (never past the CA's own expiry).
	DefaultLeafValidity = 30 * 24 * time.Hour
	// DefaultCacheSize is how many leaf certificates are kept.
	DefaultCacheSize = 1024
)

// Names inside a generated CA directory.
const (
	// CertFileName is the generated CA's certificate (PEM, mode 0644).
	CertFileName = "cert.pem"
	// KeyFileName is the generated CA's private key (PKCS #8 PEM, mode
	// 0600).
	KeyFileName = "key.pem"
)

// backdate is how far before "now" a certificate's validity starts, so a
// client whose clock is a little behind still accepts it.
const backdate = time.Hour

// renewBefore is how long before its expiry a cached leaf is replaced.
const renewBefore = 24 * time.Hour

// Options configures Open. Either Dir, or CertFile and KeyFile, must be
// set.
type Options struct {
	// Dir is the directory of the generated CA, used when CertFile and
	// KeyFile are empty. On first use Open creates it (mode 0700) with a
	// new CA in it: CertFileName and KeyFileName. Later calls load that
	// CA.
	Dir string
	// CertFile and KeyFile name an operator's CA in PEM: the CA
	// certificate first (any certificates after it are its issuers, sent
	// along with each leaf), and its private key (PKCS #8, SEC 1 "EC
	// PRIVATE KEY" or PKCS #1 "RSA PRIVATE KEY"). Both or neither.
	CertFile string
	KeyFile  string
	// CAValidity is the validity of a generated CA. Zero means
	// DefaultCAValidity (10 years).
	CAValidity time.Duration
	// LeafValidity is the validity of an issued leaf. Zero means
	// DefaultLeafValidity (30 days).
	LeafValidity time.Duration
	// CacheSize bounds the leaf cache. Zero means DefaultCacheSize.
	CacheSize int
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Authority signs leaf certificates with a CA. Its methods are safe for
// concurrent use.
type Authority struct {
	cert *x509.Certificate
	// chain is the DER of the CA certificate and of its issuers, as
	// loaded: what follows a leaf in a handshake.
	chain     [][]byte
	key       crypto.Signer
	generated bool
	created   bool
	source    string

	leafValidity time.Duration
	cacheSize    int
	now          func() time.Time

	mu    sync.Mutex
	cache map[string]*leafEntry
	// issued counts leaves signed, for tests of the cache; waiting
	// counts callers waiting for a leaf another caller signs, and
	// beforeIssue (nil outside tests) runs before each signing.
	issued      int
	waiting     int
	beforeIssue func()
}

// Open loads the CA that opts names, or the one kept in opts.Dir,
// generating and storing it there first when there is none.
func Open(opts Options) (*Authority, error) {
	a := &Authority{
		leafValidity: opts.LeafValidity,
		cacheSize:    opts.CacheSize,
		now:          opts.Now,
		cache:        make(map[string]*leafEntry),
	}
	if a.leafValidity <= 0 {
		a.leafValidity = DefaultLeafValidity
	}
	if a.cacheSize <= 0 {
		a.cacheSize = DefaultCacheSize
	}
	if a.now == nil {
		a.now = time.Now
	}
	var err error
	switch {
	case (opts.CertFile == "") != (opts.KeyFile == ""):
		return nil, errors.New("open CA: a CA certificate file and a key file go together: set both or neither")
	case opts.CertFile != "":
		err = a.loadFiles(opts.CertFile, opts.KeyFile)
		a.source = opts.CertFile
	case opts.Dir != "":
		err = a.loadOrCreate(opts.Dir, opts.CAValidity)
		a.source = filepath.Join(opts.Dir, CertFileName)
	default:
		return nil, errors.New("open CA: neither a CA directory nor CA files given")
	}
	if err != nil {
		return nil, err
	}
	if err := a.check(); err != nil {
		return nil, fmt.Errorf("open CA %s: %w", a.source, err)
	}
	return a, nil
}

// Certificate returns the CA certificate. The caller must not modify it.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// CertPEM returns the CA certificate, followed by its issuers when the
// operator's file had them, in PEM.
func (a *Authority) CertPEM() []byte {
	var b bytes.Buffer
	for _, der := range a.chain {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	return b.Bytes()
}

// Generated reports whether the CA was generated by hookproxy rather than
// loaded from an operator's files.
func (a *Authority) Generated() bool { return a.generated }

// Created reports whether this Open generated the CA: there was none in
// the directory before.
func (a *Authority) Created() bool { return a.created }

// Source is the file the CA certificate was read from.
func (a *Authority) Source() string { return a.source }

// check refuses a certificate that cannot sign leaves now.
func (a *Authority) check() error {
	c := a.cert
	if !c.IsCA || !c.BasicConstraintsValid {
		return errors.New("certificate is not a CA (BasicConstraints CA:TRUE is missing)")
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("certificate may not sign certificates (KeyUsage lacks CertSign)")
	}
	if (len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0) &&
		!slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		// Clients check the EKU of every certificate in the chain: its
		// leaves would be rejected as "unsuitable certificate purpose".
		return errors.New("certificate may not issue server certificates (ExtKeyUsage lacks serverAuth)")
	}
	if k, ok := c.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < 2048 {
		// OpenSSL at security level 2 (Debian's and most distributions'
		// default) rejects the chain: "CA certificate key too weak".
		return fmt.Errorf("CA key is RSA %d bits; clients require at least 2048", k.N.BitLen())
	}
	now := a.now()
	if now.After(c.NotAfter) {
		return fmt.Errorf("CA certificate expired on %s", c.NotAfter.UTC().Format(time.DateOnly))
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("CA certificate is not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	if !publicKeysEqual(c.PublicKey, a.key.Public()) {
		return errors.New("the private key does not belong to the CA certificate")
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// loadFiles reads an operator's CA.
func (a *Authority) loadFiles(certFile, keyFile string) error {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return fmt.Errorf("read CA certificate: %w", err)
	}
	if err := a.parseCert(certPEM); err != nil {
		return fmt.Errorf("read CA certificate %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("read CA key: %w", err)
	}
	if a.key, err = parseKey(keyPEM); err != nil {
		return fmt.Errorf("read CA key %s: %w", keyFile, err)
	}
	return nil
}

// parseCert reads the CA certificate and its issuers from PEM.
func (a *Authority) parseCert(b []byte) error {
	a.chain = nil
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return err
		}
		if a.cert == nil {
			a.cert = c
		}
		a.chain = append(a.chain, block.Bytes)
	}
	if a.cert == nil {
		return errors.New("no PEM CERTIFICATE block")
	}
	return nil
}

// parseKey reads a private key in PKCS #8, SEC 1 or PKCS #1 PEM.
func parseKey(b []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM private key block")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		}
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
}

// loadOrCreate loads the CA kept in dir, or generates one there.
func (a *Authority) loadOrCreate(dir string, validity time.Duration) error {
	a.generated = true
	certFile, keyFile := filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName)
	// create renames a complete directory into place, so a directory that
	// exists holds a whole CA, unless someone changed it since.
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		if err := a.loadFiles(certFile, keyFile); err != nil {
			// Not replaced: the app trusts what was there, and a new CA
			// would break that trust without a word.
			return fmt.Errorf("load CA from %s (remove the directory to generate a new CA): %w", dir, err)
		}
		return nil
	}
	err := create(dir, validity, a.now())
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	a.created = err == nil // not when another process stored one first
	// Load what is there now: ours, or the one another process stored
	// first.
	if err := a.loadFiles(certFile, keyFile); err != nil {
		return fmt.Errorf("load generated CA from %s: %w", dir, err)
	}
	return nil
}

// create generates a CA and stores it in dir. It writes both files into
// a temporary directory next to dir and renames that into place, so dir
// either does not exist or holds a complete CA, and of two processes
// creating it at once, one wins and the other gets fs.ErrExist.
func create(dir string, validity time.Duration, now time.Time) error {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	certPEM, keyPEM, err := generate(validity, now)
	if err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("create CA directory: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("create CA directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := writeSynced(filepath.Join(tmp, KeyFileName), keyPEM, 0o600); err != nil {
		return fmt.Errorf("store CA key: %w", err)
	}
	if err := writeSynced(filepath.Join(tmp, CertFileName), certPEM, 0o644); err != nil {
		return fmt.Errorf("store CA certificate: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Renaming onto a directory that is not empty fails: another
		// process stored its CA first.
		if _, statErr := os.Stat(filepath.Join(dir, CertFileName)); statErr == nil {
			return fs.ErrExist
		}
		return fmt.Errorf("store CA in %s: %w", dir, err)
	}
	return syncDir(parent)
}

// generate makes a new self-signed ECDSA P-256 CA.
func generate(validity time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"hookproxy"},
			// A short id tells one installation's CA from another's in a
			// trust store.
			CommonName: "hookproxy interception CA " + hex.EncodeToString(ski[:4]),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// Leaves only: the CA signs no intermediate.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:   ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// subjectKeyID is the SHA-1 of the public key's bytes (RFC 5280 4.2.1.2,
// method 1).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	var spki struct {
		Algorithm        pkix.AlgorithmIdentifier
		SubjectPublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	sum := sha1.Sum(spki.SubjectPublicKey.Bytes)
	return sum[:], nil
}

// randomSerial is a positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// writeSynced writes a new file and syncs it.
func writeSynced(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
