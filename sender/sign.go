package sender

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com) request headers.
const (
	headerWebhookID        = "Webhook-Id"
	headerWebhookTimestamp = "Webhook-Timestamp"
	headerWebhookSignature = "Webhook-Signature"
)

// secretPrefix starts a Standard Webhooks secret as it is handed out.
const secretPrefix = "whsec_"

// minSecretBytes is the shortest key accepted: the Standard Webhooks
// specification asks for keys of 24 to 64 random bytes.
const minSecretBytes = 24

// ParseSigningSecret decodes a Standard Webhooks signing secret: "whsec_"
// followed by the base64 of the key (the prefix may be left out, as the
// standardwebhooks libraries allow). The key must be at least 24 bytes.
// Errors never repeat the secret.
func ParseSigningSecret(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), secretPrefix)
	if s == "" {
		return nil, errors.New("signing secret is empty")
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("signing secret is not whsec_ followed by standard base64")
	}
	if len(key) < minSecretBytes {
		return nil, fmt.Errorf("signing secret holds %d bytes, want at least %d", len(key), minSecretBytes)
	}
	return key, nil
}

// signer signs deliveries the Standard Webhooks way, with one or more
// keys (several while a secret is being rotated).
type signer struct{ keys [][]byte }

// sign sets webhook-id, webhook-timestamp and webhook-signature on h for
// body: the signature is "v1," + base64(HMAC-SHA256(key,
// "{id}.{timestamp}.{body}")) for each key, separated by spaces. A nil
// signer does nothing.
func (s *signer) sign(h http.Header, id string, at time.Time, body []byte) {
	if s == nil || len(s.keys) == 0 {
		return
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	sigs := make([]string, 0, len(s.keys))
	for _, key := range s.keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	h.Set(headerWebhookID, id)
	h.Set(headerWebhookTimestamp, ts)
	h.Set(headerWebhookSignature, strings.Join(sigs, " "))
}
