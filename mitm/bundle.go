package mitm

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SystemRootFiles returns the usual places of the system's trusted roots
// as one PEM file, in the order Go's crypto/x509 looks for them on Linux.
func SystemRootFiles() []string {
	return []string{
		"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Alpine
		"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
		"/etc/ssl/ca-bundle.pem",                            // openSUSE
		"/etc/pki/tls/cacert.pem",                           // OpenELEC
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
		"/etc/ssl/cert.pem",                                 // Alpine, macOS, BSDs
	}
}

// ErrNoSystemRoots is ReadSystemRoots' answer when none of the files
// exists or holds a certificate.
var ErrNoSystemRoots = errors.New("no system root certificates found")

// ReadSystemRoots returns the certificates of the first of paths that
// exists and holds at least one, in PEM, and that path.
func ReadSystemRoots(paths []string) (pemBytes []byte, path string, err error) {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("read system roots: %w", err)
		}
		if certs := certBlocks(b); len(certs) > 0 {
			return certs, p, nil
		}
	}
	return nil, "", ErrNoSystemRoots
}

// certBlocks keeps the CERTIFICATE blocks of a PEM file, re-encoded, and
// drops everything else (comments, trust attributes, keys).
func certBlocks(b []byte) []byte {
	var out bytes.Buffer
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out.Bytes()
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			continue
		}
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})
	}
}

// Bundle is the trust bundle for the app: the system roots, then the
// hookproxy CA, each part ending with a newline. python requests loads
// the whole file as its only trust store (REQUESTS_CA_BUNDLE replaces its
// default), so it must hold the system roots as well, or every other
// HTTPS site stops working for the app.
func (a *Authority) Bundle(systemRoots []byte) []byte {
	var b bytes.Buffer
	b.Write(systemRoots)
	if len(systemRoots) > 0 && !bytes.HasSuffix(systemRoots, []byte("\n")) {
		b.WriteByte('\n')
	}
	b.WriteString("# hookproxy interception CA: " + a.cert.Subject.CommonName + "\n")
	b.Write(a.CertPEM())
	return b.Bytes()
}

// WriteFile replaces path with data atomically (a temporary file in the
// same directory, synced, then renamed), so a reader sees the old file
// or the new one, never a part. The directory is created when missing.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}
