// Package egress keeps webhook delivery away from the operator's own
// networks (SSRF protection).
//
// Hook targets are URLs supplied by subscribers and are untrusted: a
// target naming, or resolving to, 127.0.0.1, a private network or a cloud
// metadata endpoint would make hookproxy a way into them. A Guard refuses
// such destinations. It checks the IP address actually being dialled,
// after DNS resolution, from inside net.Dialer (see Guard.Dialer), so a
// name that resolves to a public address when looked at and to a private
// one when connected to (DNS rebinding) cannot slip through.
//
// The Guard is used only by the delivery client; pass-through traffic
// does not go through it. Self, which keeps both away from hookproxy's own
// listeners (its admin API above all), is used by both.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// ErrBlocked is matched (errors.Is) by every error that refuses a
// destination; the error itself is a *BlockedError. A delivery that fails
// with it will fail the same way on every retry.
var ErrBlocked = errors.New("destination address not allowed")

// BlockedError is a refused destination address and why it was refused.
type BlockedError struct {
	// Addr is the address as dialled (an IPv4-mapped or zoned form is
	// kept as it was).
	Addr netip.Addr
	// Class is what Classify said of Addr; never Public.
	Class Class
}

// Error says which address was refused, its class and which setting
// would let it through.
func (e *BlockedError) Error() string {
	hint := "allow with HOOKPROXY_ALLOW_PRIVATE_TARGETS=true or HOOKPROXY_ALLOW_CIDRS"
	if !e.Class.internal() {
		hint = "allow only by listing it in HOOKPROXY_ALLOW_CIDRS"
	}
	return fmt.Sprintf("blocked: %s is %s (%s)", e.Addr, e.Class, hint)
}

// Is makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// Guard decides which destination addresses delivery may connect to.
//
// The zero value lets through Public addresses only. A nil *Guard
// behaves as the zero value. A Guard must not be changed while it is in
// use; Dialer takes a copy.
type Guard struct {
	// AllowPrivate lets through the operator's own networks: Loopback,
	// Private, CGNAT and LinkLocal. It does not open Metadata,
	// Unspecified, Multicast, Reserved or Invalid addresses.
	AllowPrivate bool
	// Allow lists prefixes that are let through whatever their class,
	// metadata addresses included: a prefix that contains
	// 169.254.169.254 (169.254.0.0/16, say) opens it. An IPv4-mapped
	// address (::ffff:a.b.c.d) also matches an IPv4 prefix. Build it with
	// ParseCIDRs.
	Allow []netip.Prefix
	// Self, when set, are hookproxy's own listeners, which Control refuses
	// whatever AllowPrivate and Allow say.
	Self *Self
}

// Check returns nil when delivery may connect to ip, and otherwise a
// *BlockedError (errors.Is(err, ErrBlocked) is true). It is a pure
// function of g and ip.
func (g *Guard) Check(ip netip.Addr) error {
	c := Classify(ip)
	if c == Public {
		return nil
	}
	if g != nil {
		if g.allowed(ip) {
			return nil
		}
		if g.AllowPrivate && c.internal() {
			return nil
		}
	}
	return &BlockedError{Addr: ip, Class: c}
}

func (g *Guard) allowed(ip netip.Addr) bool {
	if len(g.Allow) == 0 || !ip.IsValid() {
		return false
	}
	// netip.Prefix.Contains is false for any zoned address.
	ip = ip.WithZone("")
	unmapped := ip.Unmap()
	for _, p := range g.Allow {
		if p.Contains(ip) || p.Contains(unmapped) {
			return true
		}
	}
	return false
}

// Control checks the address a net.Dialer is about to connect to; it has
// the signature of net.Dialer.Control. address is "ip:port" as the dialer
// passes it, after name resolution; anything else (a Unix socket path, a
// host name) is refused with an error that is not ErrBlocked, since it
// means the guard is wired up wrongly. An address of g.Self is refused
// whatever its class and g's allowances. The socket has been created but
// not connected when Control runs, so a refused address is never sent a
// packet.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("check %s destination %q: %w", network, address, err)
	}
	if g != nil {
		if err := g.Self.Check(ap); err != nil {
			return err
		}
	}
	return g.Check(ap.Addr())
}

// Dialer returns a copy of base (a zero net.Dialer when base is nil) whose
// every connection is first checked by g, for use as
// http.Transport.DialContext = g.Dialer(base).DialContext. A refused dial
// fails with an error wrapping a *BlockedError, which http.Client passes
// on, so errors.Is(err, ErrBlocked) holds for the request's error.
//
// base's own Control or ControlContext still runs, after g's check and
// only for addresses g lets through. base is not modified. The check is
// on the address dialled: a Transport with a Proxy would have it check the
// proxy's address, not the target's.
func (g *Guard) Dialer(base *net.Dialer) *net.Dialer {
	var d net.Dialer
	if base != nil {
		d = *base
	}
	guard := &Guard{}
	if g != nil {
		guard = &Guard{AllowPrivate: g.AllowPrivate, Allow: slices.Clone(g.Allow), Self: g.Self}
	}
	nextCtx, next := d.ControlContext, d.Control
	// net.Dialer ignores Control when ControlContext is set, so the check
	// goes in ControlContext and the base's hooks are called from it.
	d.Control = nil
	d.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		if err := guard.Control(network, address, c); err != nil {
			return err
		}
		var err error
		switch {
		case nextCtx != nil:
			err = nextCtx(ctx, network, address, c)
		case next != nil:
			err = next(network, address, c)
		}
		if rec, ok := ctx.Value(passedKey{}).(*passedAddrs); ok && err == nil {
			rec.add(address)
		}
		return err
	}
	return &d
}

// DialContext returns g.Dialer(base).DialContext, for
// http.Transport.DialContext, with one difference: a dial that got past
// the guard to at least one of a name's addresses and failed there is not
// reported as ErrBlocked, even when the guard refused another of them.
// net.Dialer reports the error of the first address it tried, so a
// refused answer listed before an allowed receiver that is down (a name
// with an AAAA record outside ALLOW_CIDRS, say) would turn a failure
// worth a retry into a permanent refusal.
func (g *Guard) DialContext(base *net.Dialer) func(ctx context.Context, network, address string) (net.Conn, error) {
	d := g.Dialer(base)
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		rec := &passedAddrs{}
		c, err := d.DialContext(context.WithValue(ctx, passedKey{}, rec), network, address)
		if errors.Is(err, ErrBlocked) {
			if passed := rec.list(); len(passed) > 0 {
				// %v, not %w: the refusal is not the outcome.
				return nil, fmt.Errorf("dial %s %s: no connection to %s (the guard refused the other addresses: %v)",
					network, address, strings.Join(passed, ", "), err)
			}
		}
		return c, err
	}
}

// passedKey is the context key of the passedAddrs of one DialContext.
type passedKey struct{}

// passedAddrs records the addresses of one dial that the guard let
// through; net.Dialer may try several at once (Happy Eyeballs).
type passedAddrs struct {
	mu    sync.Mutex
	addrs []string
}

func (p *passedAddrs) add(a string) {
	p.mu.Lock()
	p.addrs = append(p.addrs, a)
	p.mu.Unlock()
}

func (p *passedAddrs) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.addrs)
}

// ParseCIDRs parses the allow list as an operator writes it
// (HOOKPROXY_ALLOW_CIDRS): CIDR prefixes such as "10.0.0.0/8" or
// "fd00::/8", and single addresses such as "192.0.2.7", which stand for
// themselves alone. Spaces around an entry are ignored. An empty entry
// (",,", a trailing comma) is an error, as in the other lists, and so is
// a prefix with bits set beyond its length ("10.0.0.1/8"), rather than
// silently widened, and a zoned address. The error names the first bad
// entry.
func ParseCIDRs(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range entries {
		s := strings.TrimSpace(e)
		if s == "" {
			return nil, fmt.Errorf("parse allowed CIDR %q: empty entry", s)
		}
		p, err := parseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("parse allowed CIDR %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("address has bits set beyond /%d (the prefix is %s)", p.Bits(), m)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("not an IP address or CIDR prefix")
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("zoned addresses cannot be allowed")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
