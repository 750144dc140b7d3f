package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
)

// authorized reports whether r carries the configured credentials in
// Proxy-Authorization (Basic). The comparison is of SHA-256 sums in
// constant time, so neither the content nor the length of the secret
// shows in how long a refusal takes.
func (p *Proxy) authorized(r *http.Request) bool {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Proxy-Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false
	}
	sum := sha256.Sum256(raw)
	return subtle.ConstantTimeCompare(sum[:], p.auth[:]) == 1
}
