package egress

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestSelfCheck(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	loop := NewSelf([]net.Addr{tcp("127.0.0.1:9090"), tcp("10.0.0.5:8080")}, nil)
	local := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fe80::1%eth0")}
	wild := NewSelf([]net.Addr{tcp("[::]:9090")}, func() []netip.Addr { return local })
	cases := []struct {
		self    *Self
		addr    string
		refused bool
	}{
		{loop, "127.0.0.1:9090", true},
		{loop, "127.0.0.2:9090", true}, // any loopback address, to be safe
		{loop, "[::ffff:127.0.0.1]:9090", true},
		{loop, "[::1]:9090", true},
		{loop, "0.0.0.0:9090", true}, // a dial to 0.0.0.0 reaches the local host
		{loop, "[::]:9090", true},
		{loop, "127.0.0.1:9091", false},
		{loop, "10.0.0.5:8080", true},
		{loop, "10.0.0.6:8080", false},
		{loop, "127.0.0.1:8080", false}, // 10.0.0.5:8080 is not reached through loopback
		{loop, "8.8.8.8:9090", false},
		{wild, "127.0.0.1:9090", true},
		{wild, "[::1]:9090", true},
		{wild, "10.1.2.3:9090", true},
		{wild, "[::ffff:10.1.2.3]:9090", true},
		{wild, "[fe80::1%eth0]:9090", true},
		{wild, "10.1.2.4:9090", false},
		{wild, "10.1.2.3:443", false},
		{nil, "127.0.0.1:9090", false},
	}
	for _, c := range cases {
		err := c.self.Check(netip.MustParseAddrPort(c.addr))
		if got := err != nil; got != c.refused {
			t.Errorf("Check(%s) = %v, want refused %v", c.addr, err, c.refused)
		}
		if err != nil && !errors.Is(err, ErrBlocked) {
			t.Errorf("Check(%s) = %v, not ErrBlocked", c.addr, err)
		}
	}
	// An address the host gains after start (a new interface, a lease)
	// is known from then on, and one it loses no longer is.
	local = []netip.Addr{netip.MustParseAddr("10.1.2.4")}
	if err := wild.Check(netip.MustParseAddrPort("10.1.2.4:9090")); err == nil {
		t.Error("Check(10.1.2.4:9090) after the host gained 10.1.2.4: not refused")
	}
	if err := wild.Check(netip.MustParseAddrPort("10.1.2.3:9090")); err != nil {
		t.Errorf("Check(10.1.2.3:9090) after the host lost 10.1.2.3 = %v, want nil", err)
	}
}

// TestGuardRefusesSelf: no allowance opens hookproxy's own listeners to
// deliveries.
func TestGuardRefusesSelf(t *testing.T) {
	self := NewSelf([]net.Addr{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090}}, nil)
	g := &Guard{AllowPrivate: true, Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Self: self}
	err := g.Control("tcp4", "127.0.0.1:9090", nil)
	var se *SelfError
	if !errors.As(err, &se) || !errors.Is(err, ErrBlocked) {
		t.Errorf("Control(127.0.0.1:9090) = %v, want a *SelfError", err)
	}
	if err := g.Control("tcp4", "127.0.0.1:9091", nil); err != nil {
		t.Errorf("Control(127.0.0.1:9091) = %v, want nil", err)
	}
	// Dialer keeps Self.
	d := g.Dialer(nil)
	if err := d.ControlContext(t.Context(), "tcp4", "127.0.0.1:9090", nil); !errors.Is(err, ErrBlocked) {
		t.Errorf("Dialer's ControlContext(127.0.0.1:9090) = %v, want ErrBlocked", err)
	}
}
