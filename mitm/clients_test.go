package mitm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"testing"
	"time"
)

// TestLeafAfterCAExpiry: once the CA has expired (a long-running
// process), Leaf must say so instead of handing out a leaf that no
// client accepts (NotAfter = the CA's, already past, before NotBefore).
func TestLeafAfterCAExpiry(t *testing.T) {
	clk := newClock()
	a := open(t, Options{Dir: filepath.Join(t.TempDir(), "ca"), Now: clk.Now, CAValidity: 48 * time.Hour})
	if _, err := a.Leaf("hooks.example.com"); err != nil {
		t.Fatal(err)
	}
	clk.advance(72 * time.Hour) // the CA expired a day ago
	leaf, err := a.Leaf("hooks.example.com")
	if err == nil {
		t.Fatalf("Leaf after the CA expired issued a leaf valid %v .. %v (CA NotAfter %v, now %v)",
			leaf.Leaf.NotBefore, leaf.Leaf.NotAfter, a.Certificate().NotAfter, clk.Now())
	}
	t.Logf("error: %v", err)
}

// TestOperatorCAServerAuthEKU: an operator CA whose ExtKeyUsage
// does not allow serverAuth signs leaves that Go and OpenSSL reject
// (EKU nesting); Open accepts it silently.
func TestOperatorCAServerAuthEKU(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	certFile, keyFile, caCert := operatorCA(t, key, "PRIVATE KEY", &x509.Certificate{
		SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "Client-auth CA"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	clk := newClock()
	a, err := Open(Options{CertFile: certFile, KeyFile: keyFile, Now: clk.Now})
	if err != nil {
		t.Logf("Open refused: %v", err)
		return
	}
	leaf, err := a.Leaf("hooks.example.com")
	if err != nil {
		t.Logf("Leaf refused: %v", err)
		return
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	_, verr := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "hooks.example.com", Roots: roots, CurrentTime: clk.Now()})
	t.Fatalf("operator CA without serverAuth accepted; its leaf verifies as: %v", verr)
}

// TestOperatorCANameConstraints: a name-constrained operator CA
// (permitted corp.example) is accepted, and a leaf for a host outside
// the constraint is handed out silently although every client rejects
// it.
func TestOperatorCANameConstraints(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	certFile, keyFile, caCert := operatorCA(t, key, "PRIVATE KEY", &x509.Certificate{
		SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "Constrained CA"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		PermittedDNSDomainsCritical: true, PermittedDNSDomains: []string{"corp.example"},
	})
	clk := newClock()
	a := open(t, Options{CertFile: certFile, KeyFile: keyFile, Now: clk.Now})
	inside, err := a.Leaf("hooks.corp.example")
	if err != nil {
		t.Fatalf("Leaf inside the constraint: %v", err)
	}
	verifyLeaf(t, inside, caCert, "hooks.corp.example", clk.Now())
	leaf, err := a.Leaf("hooks.example.com")
	if err == nil {
		roots := x509.NewCertPool()
		roots.AddCert(caCert)
		_, verr := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "hooks.example.com", Roots: roots, CurrentTime: clk.Now()})
		t.Fatalf("Leaf outside the CA's name constraints issued silently; clients see: %v", verr)
	}
	t.Logf("error: %v", err)
}

// TestOperatorCAWeakRSA: an RSA-1024 operator CA loads, and
// OpenSSL 3.0 at Debian's security level 2 rejects every leaf it signs
// ("CA certificate key too weak").
func TestOperatorCAWeakRSA(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Skip(err)
	}
	certFile, keyFile, _ := operatorCA(t, key, "RSA PRIVATE KEY", nil)
	if _, err := Open(Options{CertFile: certFile, KeyFile: keyFile, Now: newClock().Now}); err == nil {
		t.Fatal("Open accepted an RSA-1024 CA that python requests (OpenSSL SECLEVEL 2) rejects")
	} else {
		t.Logf("error: %v", err)
	}
}
