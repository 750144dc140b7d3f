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
	"strings"
	"testing"
	"time"
)

// TestLeafAfterCAExpiry: once the CA has expired (a long-running
// process), Leaf says so instead of handing out a leaf that no client
// accepts (it would end when the CA did, already past).
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
	if !strings.Contains(err.Error(), "the CA expired") {
		t.Errorf("Leaf after the CA expired: %v, want an error saying so", err)
	}
}

// TestOperatorCAServerAuthEKU: an operator CA whose extended key usage
// leaves out serverAuth signs leaves that Go and OpenSSL reject (they
// check the usage along the chain): Open refuses it.
func TestOperatorCAServerAuthEKU(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	certFile, keyFile, _ := operatorCA(t, key, "PRIVATE KEY", &x509.Certificate{
		SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "Client-auth CA"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	_, err := Open(Options{CertFile: certFile, KeyFile: keyFile, Now: newClock().Now})
	if err == nil || !strings.Contains(err.Error(), "serverAuth") {
		t.Fatalf("Open of a CA without serverAuth: %v, want a refusal naming serverAuth", err)
	}
}

// TestOperatorCANameConstraints: a name-constrained operator CA
// (permitted corp.example) signs leaves for the hosts it permits; for
// another host Leaf returns the reason instead of a leaf every client
// rejects.
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
		t.Fatalf("Leaf outside the CA's name constraints issued; clients see: %v", verr)
	}
	if !strings.Contains(err.Error(), "cannot vouch") {
		t.Errorf("Leaf outside the constraints: %v, want the CA's refusal", err)
	}
}

// TestOperatorCAWeakRSA: OpenSSL 3.0 at Debian's security level 2
// rejects every leaf an RSA-1024 CA signs ("CA certificate key too
// weak"): Open refuses such a CA.
func TestOperatorCAWeakRSA(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, _ := operatorCA(t, key, "RSA PRIVATE KEY", nil)
	_, err = Open(Options{CertFile: certFile, KeyFile: keyFile, Now: newClock().Now})
	if err == nil || !strings.Contains(err.Error(), "1024 bits") {
		t.Fatalf("Open of an RSA-1024 CA: %v, want a refusal naming its size", err)
	}
}
