package mitm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// leafEntry is one cached leaf. ready is closed once cert and err are
// set; until then other callers for the same host wait on it instead of
// signing a leaf of their own.
type leafEntry struct {
	ready   chan struct{}
	cert    *tls.Certificate
	renewAt time.Time
	err     error
}

// fresh reports whether a cached leaf may still be served at now: before
// its renewal, and within its validity by the wall clock, which is what
// the app checks it by. renewAt is on the monotonic clock, which a step
// of the wall clock does not move: after a step back of more than
// backdate (NTP correcting a clock that ran ahead) a cached leaf was not
// yet valid for the app, whose handshakes failed, and hooks were lost,
// until the leaf was renewed weeks later.
func (e *leafEntry) fresh(now time.Time) bool {
	l := e.cert.Leaf
	return now.Before(e.renewAt) && !now.Before(l.NotBefore) && now.Before(l.NotAfter)
}

// Leaf returns a certificate for host (a DNS name or an IP address,
// without a port), signed by the CA and followed by the CA's chain. An IP
// address gets an IP address SAN, a name a DNS SAN. Leaves are ECDSA
// P-256 and cached until a day before they expire; concurrent calls for
// a host that is not cached sign one leaf between them.
func (a *Authority) Leaf(host string) (*tls.Certificate, error) {
	host = normalizeHost(host)
	if host == "" {
		return nil, errors.New("issue certificate: empty host name")
	}
	if strings.Contains(host, "*") {
		// A CONNECT names one host; a wildcard leaf would be good for
		// every name under it.
		return nil, fmt.Errorf("issue certificate: %q is a wildcard, not a host name", host)
	}
	a.mu.Lock()
	if e, ok := a.cache[host]; ok {
		select {
		case <-e.ready:
			if e.err == nil && e.fresh(a.now()) {
				a.mu.Unlock()
				return e.cert, nil
			}
			// Due for renewal: replaced below, a.mu still held.
		default:
			// Being issued by another caller: wait for that one.
			a.waiting++
			a.mu.Unlock()
			<-e.ready
			if e.err != nil {
				return nil, e.err
			}
			return e.cert, nil
		}
	}
	e := &leafEntry{ready: make(chan struct{})}
	a.evictLocked()
	a.cache[host] = e
	a.issued++
	a.mu.Unlock()

	if a.beforeIssue != nil {
		a.beforeIssue()
	}
	e.cert, e.renewAt, e.err = a.issue(host)
	close(e.ready)
	if e.err != nil {
		// Not kept: the next handshake tries again.
		a.mu.Lock()
		if a.cache[host] == e {
			delete(a.cache, host)
		}
		a.mu.Unlock()
		return nil, e.err
	}
	return e.cert, nil
}

// TLSConfig returns the server configuration of an intercepted
// connection to host: Leaf(host) and TLS 1.2 or later.
func (a *Authority) TLSConfig(host string) (*tls.Config, error) {
	cert, err := a.Leaf(host)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{*cert},
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// evictLocked makes room for one entry: it drops expired leaves first,
// then arbitrary ones. Entries still being issued are kept.
func (a *Authority) evictLocked() {
	if len(a.cache) < a.cacheSize {
		return
	}
	now := a.now()
	for h, e := range a.cache {
		select {
		case <-e.ready:
			if e.err != nil || !now.Before(e.renewAt) {
				delete(a.cache, h)
			}
		default:
		}
	}
	for h, e := range a.cache {
		if len(a.cache) < a.cacheSize {
			return
		}
		select {
		case <-e.ready:
			delete(a.cache, h)
		default:
		}
	}
}

// issue signs a new leaf for host.
func (a *Authority) issue(host string) (*tls.Certificate, time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("issue certificate for %s: %w", host, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("issue certificate for %s: %w", host, err)
	}
	now := a.now()
	if !now.Before(a.cert.NotAfter) {
		// A leaf would end when the CA did, already past: no client
		// accepts it.
		return nil, time.Time{}, fmt.Errorf("issue certificate for %s: the CA expired on %s", host,
			a.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(a.leafValidity)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"hookproxy"}, CommonName: host},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("issue certificate for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("issue certificate for %s: %w", host, err)
	}
	// What a client will check: the CA's name constraints, its
	// ExtKeyUsage, both validity periods. A leaf that fails here would
	// fail the app's handshake without a word in hookproxy's log.
	roots := x509.NewCertPool()
	roots.AddCert(a.cert)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: now}); err != nil {
		return nil, time.Time{}, fmt.Errorf("issue certificate for %s: the CA cannot vouch for it: %w", host, err)
	}
	chain := make([][]byte, 0, 1+len(a.chain))
	chain = append(chain, der)
	chain = append(chain, a.chain...)
	renewAt := notAfter.Add(-renewBefore)
	if half := now.Add(notAfter.Sub(now) / 2); renewAt.Before(half) {
		// A short validity (the CA itself close to expiry, or a short
		// LeafValidity) is renewed half-way instead.
		renewAt = half
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, renewAt, nil
}

// normalizeHost lower-cases a host name and drops IPv6 brackets and a
// trailing dot, so "Example.COM." and "example.com" share one leaf.
func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(h, ".")
}
