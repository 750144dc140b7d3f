package mitm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
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

// TestOperatorCANameConstraints: a name-constrained operator CA
// (permitted corp.example) signs leaves for the hosts it permits; for
// another host Leaf returns the reason instead of a leaf every client
// rejects.
func TestOperatorCANameConstraints(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := operatorTemplate()
	tmpl.PermittedDNSDomainsCritical, tmpl.PermittedDNSDomains = true, []string{"corp.example"}
	certFile, keyFile, caCert := operatorCA(t, key, "PRIVATE KEY", tmpl)
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
