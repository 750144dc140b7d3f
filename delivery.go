package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"

	"hookproxy/egress"
	"hookproxy/sender"
)

// Delivery policy settings: backoff, redirects, 410 Gone, signatures and
// the egress guard (SSRF protection). The sender applies them; the guard
// sits in the sender's own transport, at dial time.

// validateDelivery checks the delivery policy settings; bad is
// validate's reporter. Secrets and the gone webhook URL (which may carry
// a token) are not repeated in errors.
func (c *Config) validateDelivery(bad func(name string, value any, why string)) {
	if c.RetryBackoff != sender.BackoffExponential && c.RetryBackoff != sender.BackoffFixed {
		bad("RETRY_BACKOFF", c.RetryBackoff, "must be exponential or fixed")
	}
	if c.RetryMaxInterval <= 0 {
		bad("RETRY_MAX_INTERVAL", c.RetryMaxInterval, "must be positive")
	}
	if c.RetryMaxAge < 0 {
		bad("RETRY_MAX_AGE", c.RetryMaxAge, "must be 0 (no age limit) or positive")
	}
	if c.BatchMaxBytes < 0 {
		bad("BATCH_MAX_BYTES", c.BatchMaxBytes, "must be 0 (no limit) or positive")
	}
	_, cidrErr := egress.ParseCIDRs(c.AllowCIDRs)
	if c.GoneWebhook != "" {
		u, err := url.Parse(c.GoneWebhook)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("GONE_WEBHOOK", hidden, "must be an http or https URL")
		case cidrErr == nil:
			// The host alone is named: the path or the query may hold a
			// token.
			if err := c.goneWebhookBlocked(u.Hostname()); err != nil {
				// "every notice to host localhost would be blocked: 127.0.0.1
				// is loopback (allow with ...)"
				bad("GONE_WEBHOOK", hidden, fmt.Sprintf("every notice to host %s would be %v", u.Hostname(), err))
			}
		}
	}
	for i, s := range c.SigningSecret {
		if _, err := sender.ParseSigningSecret(s); err != nil {
			bad("SIGNING_SECRET", hidden, fmt.Sprintf("secret %d of %d: %v", i+1, len(c.SigningSecret), err))
		}
	}
	if cidrErr != nil {
		bad("ALLOW_CIDRS", strings.Join(c.AllowCIDRs, ","), cidrErr.Error())
	}
}

// goneWebhookBlocked returns the egress guard's refusal of the gone
// webhook's host when the guard refuses it whatever DNS says: an IP
// literal, or localhost (both 127.0.0.1 and ::1, as a dial of localhost
// tries both). A host name is resolved at each notice, so it is not
// judged here. Nothing is dialled or looked up.
func (c *Config) goneWebhookBlocked(host string) error {
	g := c.egressGuard()
	if ip, err := netip.ParseAddr(host); err == nil {
		return g.Check(ip)
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		err4 := g.Check(netip.AddrFrom4([4]byte{127, 0, 0, 1}))
		if err6 := g.Check(netip.IPv6Loopback()); err4 != nil && err6 != nil {
			return err4
		}
	}
	return nil
}

// egressGuard is the guard every delivery dial goes through: public
// addresses, plus the operator's networks with ALLOW_PRIVATE_TARGETS,
// plus ALLOW_CIDRS.
func (c *Config) egressGuard() *egress.Guard {
	allow, _ := egress.ParseCIDRs(c.AllowCIDRs) // checked by validateDelivery
	return &egress.Guard{AllowPrivate: c.AllowPrivateTargets, Allow: allow}
}

// logDeliveryPolicy says at start what the guard lets through and how
// deliveries are retried and signed (never the secrets themselves).
func (c *Config) logDeliveryPolicy(log *slog.Logger) {
	log.Info("delivery policy", "retries", c.Retries, "retry_backoff", c.RetryBackoff,
		"retry_interval", c.RetryInterval, "retry_max_interval", c.RetryMaxInterval, "retry_max_age", c.RetryMaxAge,
		"follow_redirects", c.FollowRedirects, "signing_secrets", len(c.SigningSecret), "gone_webhook", c.GoneWebhook != "",
		"allow_private_targets", c.AllowPrivateTargets, "allow_cidrs", strings.Join(c.AllowCIDRs, ","))
}
