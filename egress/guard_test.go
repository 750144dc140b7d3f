package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func prefixes(tb testing.TB, s ...string) []netip.Prefix {
	tb.Helper()
	ps, err := ParseCIDRs(s)
	if err != nil {
		tb.Fatal(err)
	}
	return ps
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs([]string{"10.0.0.0/8", " fd00::/8 ", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.0/104"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("fd00::/8"),
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("::ffff:10.0.0.0/104"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("ParseCIDRs = %v, want %v", got, want)
	}

	if got, err := ParseCIDRs(nil); err != nil || len(got) != 0 {
		t.Errorf("ParseCIDRs(nil) = %v, %v; want empty, nil", got, err)
	}
}

func TestParseCIDRsErrorsNameTheEntry(t *testing.T) {
	for _, tc := range []struct {
		bad  string
		want string // in the error besides the entry
	}{
		{"10.0.0.0/33", "10.0.0.0/33"},
		{"10.0.0.1/8", "10.0.0.0/8"}, // names the prefix the operator probably meant
		{"example.com", "not an IP address"},
		{"300.1.1.1", "not an IP address"},
		{"fe80::1%eth0", "zoned"},
		{"fe80::%eth0/64", "fe80::%eth0/64"},
		{"10.0.0.0/", "10.0.0.0/"},
		{"", "empty"}, // ",," or a trailing comma
	} {
		t.Run(tc.bad, func(t *testing.T) {
			_, err := ParseCIDRs([]string{"192.168.0.0/16", tc.bad, "127.0.0.1"})
			if err == nil {
				t.Fatalf("ParseCIDRs accepted %q", tc.bad)
			}
			if msg := err.Error(); !strings.Contains(msg, `"`+tc.bad+`"`) || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q: want it to name %q and say %q", msg, tc.bad, tc.want)
			}
		})
	}
}

func TestAllow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		guard *Guard
		addr  string
		want  bool
	}{
		{"127/8 opens loopback", &Guard{Allow: prefixes(t, "127.0.0.0/8")}, "127.0.0.1", true},
		{"127/8 leaves private shut", &Guard{Allow: prefixes(t, "127.0.0.0/8")}, "10.0.0.1", false},
		{"127/8 leaves ::1 shut", &Guard{Allow: prefixes(t, "127.0.0.0/8")}, "::1", false},
		{"single address", &Guard{Allow: prefixes(t, "10.1.2.3")}, "10.1.2.3", true},
		{"single address, neighbour", &Guard{Allow: prefixes(t, "10.1.2.3")}, "10.1.2.4", false},
		{"IPv4 prefix matches mapped form", &Guard{Allow: prefixes(t, "10.0.0.0/8")}, "::ffff:10.9.9.9", true},
		{"IPv4 prefix ignores NAT64 form", &Guard{Allow: prefixes(t, "10.0.0.0/8")}, "64:ff9b::a00:1", false},
		{"zoned address matches", &Guard{Allow: prefixes(t, "fe80::/10")}, "fe80::1%eth0", true},
		{"metadata opened by explicit entry", &Guard{Allow: prefixes(t, "169.254.169.254")}, "169.254.169.254", true},
		{"metadata opened by covering prefix", &Guard{Allow: prefixes(t, "169.254.0.0/16")}, "169.254.169.254", true},
		{"IPv6 metadata opened by explicit entry", &Guard{Allow: prefixes(t, "fd00:ec2::254")}, "fd00:ec2::254", true},
		{"AllowPrivate does not open metadata", &Guard{AllowPrivate: true}, "169.254.169.254", false},
		{"AllowPrivate does not open IPv6 metadata", &Guard{AllowPrivate: true}, "fd00:ec2::254", false},
		{"AllowPrivate does not open GCP's IPv6 metadata", &Guard{AllowPrivate: true}, "fd20:ce::254", false},
		{"AllowPrivate does not open OpenStack's link-local metadata", &Guard{AllowPrivate: true}, "fe80::a9fe:a9fe%eth0", false},
		{"AllowPrivate does not open unspecified", &Guard{AllowPrivate: true}, "0.0.0.0", false},
		{"AllowPrivate does not open multicast", &Guard{AllowPrivate: true}, "ff02::1", false},
		{"AllowPrivate does not open reserved", &Guard{AllowPrivate: true}, "240.0.0.1", false},
		{"AllowPrivate with Allow", &Guard{AllowPrivate: true, Allow: prefixes(t, "192.0.2.0/24")}, "192.0.2.1", true},
		{"nil Guard refuses like the zero Guard", nil, "127.0.0.1", false},
		{"nil Guard allows public", nil, "8.8.8.8", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.addr)
			err := tc.guard.Check(ip)
			if got := err == nil; got != tc.want {
				t.Errorf("Check(%s) = %v, want allowed %v", ip, err, tc.want)
			}
			if err != nil {
				checkBlocked(t, err, ip, Classify(ip))
			}
		})
	}
}

func TestBlockedErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want string
	}{
		{"10.0.0.1", "blocked: 10.0.0.1 is private (allow with HOOKPROXY_ALLOW_PRIVATE_TARGETS=true or HOOKPROXY_ALLOW_CIDRS)"},
		{"fe80::1%eth0", "blocked: fe80::1%eth0 is link-local (allow with HOOKPROXY_ALLOW_PRIVATE_TARGETS=true or HOOKPROXY_ALLOW_CIDRS)"},
		{"169.254.169.254", "blocked: 169.254.169.254 is metadata (allow only by listing it in HOOKPROXY_ALLOW_CIDRS)"},
		{"0.0.0.0", "blocked: 0.0.0.0 is unspecified (allow only by listing it in HOOKPROXY_ALLOW_CIDRS)"},
	} {
		err := (&Guard{}).Check(netip.MustParseAddr(tc.addr))
		if err == nil {
			t.Fatalf("Check(%s) = nil", tc.addr)
		}
		if got := err.Error(); got != tc.want {
			t.Errorf("Check(%s).Error()\n got %q\nwant %q", tc.addr, got, tc.want)
		}
	}
}

// TestControl drives Control with the address strings net.Dialer passes
// it; nothing is dialled.
func TestControl(t *testing.T) {
	g := &Guard{}
	for _, tc := range []struct {
		network, address string
		blocked          Class // Public: allowed
	}{
		{"tcp4", "8.8.8.8:443", Public},
		{"tcp6", "[2606:4700::1111]:443", Public},
		{"tcp4", "127.0.0.1:80", Loopback},
		{"tcp6", "[::1]:80", Loopback},
		{"tcp6", "[fe80::1%eth0]:443", LinkLocal},
		{"tcp6", "[::ffff:169.254.169.254]:80", Metadata},
		{"tcp6", "[64:ff9b::a9fe:a9fe]:80", Metadata},
		{"tcp4", "10.0.0.1:8080", Private},
		{"tcp4", "0.0.0.0:80", Unspecified},
		{"udp6", "[ff02::1]:53", Multicast},
	} {
		err := g.Control(tc.network, tc.address, nil)
		if tc.blocked == Public {
			if err != nil {
				t.Errorf("Control(%s, %s) = %v, want nil", tc.network, tc.address, err)
			}
			continue
		}
		ap := netip.MustParseAddrPort(tc.address)
		checkBlocked(t, err, ap.Addr(), tc.blocked)
	}

	// What is not ip:port means the guard is wired up wrongly: refused,
	// but not as a blocked destination.
	for _, address := range []string{"/run/hook.sock", "hook.example:443", "127.0.0.1", ""} {
		err := g.Control("unix", address, nil)
		if err == nil {
			t.Errorf("Control(%q) = nil, want an error", address)
		} else if errors.Is(err, ErrBlocked) {
			t.Errorf("Control(%q) = %v, which matches ErrBlocked", address, err)
		}
	}
}

func TestDialerChainsAndCopies(t *testing.T) {
	errBase := errors.New("base control")
	var calls []string
	base := &net.Dialer{
		Control: func(network, address string, _ syscall.RawConn) error {
			calls = append(calls, "control "+address)
			return errBase
		},
	}
	d := (&Guard{}).Dialer(base)
	if d == base {
		t.Fatal("Dialer returned base itself")
	}
	if base.ControlContext != nil {
		t.Fatal("Dialer modified base")
	}

	ctx := context.Background()
	err := d.ControlContext(ctx, "tcp4", "10.0.0.1:80", nil)
	checkBlocked(t, err, netip.MustParseAddr("10.0.0.1"), Private)
	if len(calls) != 0 {
		t.Errorf("base Control ran for a refused address: %v", calls)
	}
	if err := d.ControlContext(ctx, "tcp4", "8.8.8.8:80", nil); !errors.Is(err, errBase) {
		t.Errorf("allowed address: err = %v, want base Control's error", err)
	}
	if want := []string{"control 8.8.8.8:80"}; !slices.Equal(calls, want) {
		t.Errorf("base Control calls = %v, want %v", calls, want)
	}

	// ControlContext wins over Control in net.Dialer, and so here.
	calls = nil
	base.ControlContext = func(_ context.Context, network, address string, _ syscall.RawConn) error {
		calls = append(calls, "context "+address)
		return nil
	}
	d = (&Guard{}).Dialer(base)
	if err := d.ControlContext(ctx, "tcp6", "[2606:4700::1111]:443", nil); err != nil {
		t.Errorf("allowed address: err = %v", err)
	}
	if want := []string{"context [2606:4700::1111]:443"}; !slices.Equal(calls, want) {
		t.Errorf("base hook calls = %v, want %v", calls, want)
	}

	// A nil base and a nil Guard: a plain dialer behind the zero Guard.
	d = (*Guard)(nil).Dialer(nil)
	if d.ControlContext == nil {
		t.Fatal("Dialer(nil) has no ControlContext")
	}
	checkBlocked(t, d.ControlContext(ctx, "tcp4", "127.0.0.1:80", nil), netip.MustParseAddr("127.0.0.1"), Loopback)
}

func TestDialerSnapshotsGuard(t *testing.T) {
	g := &Guard{Allow: prefixes(t, "10.0.0.0/8")}
	d := g.Dialer(nil)
	g.Allow[0] = netip.MustParsePrefix("192.168.0.0/16")
	g.AllowPrivate = true
	ctx := context.Background()
	if err := d.ControlContext(ctx, "tcp4", "10.1.1.1:80", nil); err != nil {
		t.Errorf("10.1.1.1 refused after the Guard changed: %v", err)
	}
	checkBlocked(t, d.ControlContext(ctx, "tcp4", "192.168.1.1:80", nil), netip.MustParseAddr("192.168.1.1"), Private)
}
