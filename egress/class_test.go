package egress

import (
	"errors"
	"net/netip"
	"testing"
)

// classCases is every address form the guard must get right. zero,
// private and loop say whether the address is let through by the zero
// Guard, by Guard{AllowPrivate: true} and by a Guard allowing 127.0.0.0/8.
var classCases = []struct {
	addr                string
	class               Class
	zero, private, loop bool
}{
	// Public unicast.
	{"8.8.8.8", Public, true, true, true},
	{"1.1.1.1", Public, true, true, true},
	{"172.32.0.1", Public, true, true, true},
	{"100.128.0.1", Public, true, true, true},
	{"2606:4700::1111", Public, true, true, true},
	{"2001:4860:4860::8888", Public, true, true, true},
	{"::ffff:8.8.8.8", Public, true, true, true},

	// Loopback, in every disguise.
	{"127.0.0.1", Loopback, false, true, true},
	{"127.255.255.254", Loopback, false, true, true},
	{"::1", Loopback, false, true, false},
	{"::ffff:127.0.0.1", Loopback, false, true, true},
	{"::7f00:1", Loopback, false, true, false},                             // IPv4-compatible
	{"::ffff:0:7f00:1", Loopback, false, true, false},                      // IPv4-translated
	{"64:ff9b::7f00:1", Loopback, false, true, false},                      // NAT64
	{"2002:7f00:0001::", Loopback, false, true, false},                     // 6to4
	{"2002:7f00:1:abcd::1", Loopback, false, true, false},                  // 6to4, host part set
	{"2001:0:4136:e378:8000:63bf:80ff:fffe", Loopback, false, true, false}, // Teredo, client 127.0.0.1

	// Private networks.
	{"10.0.0.1", Private, false, true, false},
	{"172.16.0.1", Private, false, true, false},
	{"172.31.255.255", Private, false, true, false},
	{"192.168.1.1", Private, false, true, false},
	{"fd12:3456::1", Private, false, true, false},
	{"fc00::1", Private, false, true, false},
	{"::ffff:10.0.0.1", Private, false, true, false},
	{"2002:a00:1::", Private, false, true, false},
	{"64:ff9b:1::808:808", Private, false, true, false}, // local-use NAT64 is never public

	// Shared address space.
	{"100.64.0.1", CGNAT, false, true, false},
	{"100.127.255.254", CGNAT, false, true, false},

	// Link-local.
	{"169.254.1.1", LinkLocal, false, true, false},
	{"fe80::1", LinkLocal, false, true, false},
	{"fe80::1%eth0", LinkLocal, false, true, false},

	// Cloud metadata: only an explicit Allow entry opens these.
	{"169.254.169.254", Metadata, false, false, false},
	{"169.254.169.253", Metadata, false, false, false},
	{"169.254.170.2", Metadata, false, false, false},
	{"169.254.170.23", Metadata, false, false, false},
	{"169.254.0.23", Metadata, false, false, false},
	{"100.100.100.200", Metadata, false, false, false},
	{"192.0.0.192", Metadata, false, false, false},
	{"168.63.129.16", Metadata, false, false, false},
	{"fd00:ec2::254", Metadata, false, false, false},
	{"fd00:ec2::253", Metadata, false, false, false},
	{"fd00:ec2::23", Metadata, false, false, false},
	{"fd20:ce::254", Metadata, false, false, false},
	{"fe80::a9fe:a9fe", Metadata, false, false, false},
	{"fe80::a9fe:a9fe%eth0", Metadata, false, false, false},
	{"::ffff:169.254.169.254", Metadata, false, false, false},
	{"::a9fe:a9fe", Metadata, false, false, false},
	{"64:ff9b::a9fe:a9fe", Metadata, false, false, false},
	{"64:ff9b::169.254.169.254", Metadata, false, false, false},
	{"2002:a9fe:a9fe::", Metadata, false, false, false},
	{"2001:0:a9fe:a9fe:8000:63bf:f7f7:f7f7", Metadata, false, false, false}, // Teredo, server 169.254.169.254
	{"2001:0:4136:e378:8000:63bf:5601:5601", Metadata, false, false, false}, // Teredo, client 169.254.169.254
	{"64:ff9b:1::a9fe:a9fe", Metadata, false, false, false},                 // local-use NAT64, /96 layout
	{"64:ff9b:1:a9fe:a9:fe00::", Metadata, false, false, false},             // /48 layout
	{"64:ff9b:1:a9:fe:a9fe::", Metadata, false, false, false},               // /56 layout
	{"64:ff9b:1:0:a9:fea9:fe00:0", Metadata, false, false, false},           // /64 layout

	// Multicast.
	{"224.0.0.1", Multicast, false, false, false},
	{"239.255.255.250", Multicast, false, false, false},
	{"ff02::1", Multicast, false, false, false},
	{"ff05::1:3", Multicast, false, false, false},
	{"64:ff9b:1::e000:1", Multicast, false, false, false},

	// Unspecified: a dial to it reaches the local host.
	{"0.0.0.0", Unspecified, false, false, false},
	{"::", Unspecified, false, false, false},
	{"::ffff:0.0.0.0", Unspecified, false, false, false},

	// Reserved, documentation, benchmarking, broadcast, unallocated.
	{"0.1.2.3", Reserved, false, false, false},
	{"192.0.0.8", Reserved, false, false, false},
	{"192.0.2.7", Reserved, false, false, false},
	{"198.18.0.1", Reserved, false, false, false},
	{"198.51.100.7", Reserved, false, false, false},
	{"203.0.113.9", Reserved, false, false, false},
	{"240.0.0.1", Reserved, false, false, false},
	{"255.255.255.255", Reserved, false, false, false},
	{"2001:db8::1", Reserved, false, false, false},
	{"3fff::1", Reserved, false, false, false},
	{"2001:2::1", Reserved, false, false, false},
	{"2001:20::1", Reserved, false, false, false},
	{"100::1", Reserved, false, false, false},
	{"fec0::1", Reserved, false, false, false},
	{"5f00::1", Reserved, false, false, false},
	{"::2", Reserved, false, false, false}, // IPv4-compatible 0.0.0.2

	// Forms whose embedded IPv4 address is public.
	{"64:ff9b::808:808", Public, true, true, true},
	{"2002:0808:0808::", Public, true, true, true},
	{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", Public, true, true, true}, // Teredo, client 8.8.8.8
}

func TestClassify(t *testing.T) {
	loop := &Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	for _, tc := range classCases {
		t.Run(tc.addr, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.addr)
			if got := Classify(ip); got != tc.class {
				t.Errorf("Classify(%s) = %s, want %s", ip, got, tc.class)
			}
			for _, g := range []struct {
				name  string
				guard *Guard
				want  bool
			}{
				{"zero Guard", &Guard{}, tc.zero},
				{"AllowPrivate", &Guard{AllowPrivate: true}, tc.private},
				{"Allow 127.0.0.0/8", loop, tc.loop},
			} {
				err := g.guard.Check(ip)
				if got := err == nil; got != g.want {
					t.Errorf("%s: Check(%s) = %v, want allowed %v", g.name, ip, err, g.want)
				}
				if err != nil {
					checkBlocked(t, err, ip, tc.class)
				}
			}
		})
	}
}

// checkBlocked asserts that err refuses ip as class c.
func checkBlocked(tb testing.TB, err error, ip netip.Addr, c Class) {
	tb.Helper()
	if !errors.Is(err, ErrBlocked) {
		tb.Fatalf("error %v: errors.Is(err, ErrBlocked) = false", err)
	}
	var be *BlockedError
	if !errors.As(err, &be) {
		tb.Fatalf("error %v: not a *BlockedError", err)
	}
	if be.Addr != ip || be.Class != c {
		tb.Errorf("BlockedError = {%s, %s}, want {%s, %s}", be.Addr, be.Class, ip, c)
	}
}

func TestClassifyInvalid(t *testing.T) {
	if got := Classify(netip.Addr{}); got != Invalid {
		t.Errorf("Classify(zero Addr) = %s, want %s", got, Invalid)
	}
	g := &Guard{AllowPrivate: true, Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	checkBlocked(t, g.Check(netip.Addr{}), netip.Addr{}, Invalid)
}

func TestClassString(t *testing.T) {
	for _, tc := range []struct {
		c    Class
		want string
	}{
		{Invalid, "invalid"}, {Public, "public"}, {Loopback, "loopback"},
		{Private, "private"}, {CGNAT, "cgnat"}, {LinkLocal, "link-local"},
		{Multicast, "multicast"}, {Unspecified, "unspecified"},
		{Reserved, "reserved"}, {Metadata, "metadata"}, {Class(200), "class(200)"},
	} {
		if got := tc.c.String(); got != tc.want {
			t.Errorf("Class(%d).String() = %q, want %q", uint8(tc.c), got, tc.want)
		}
	}
}

// TestTeredoExample recomputes the Teredo address used in classCases, so
// the table's literal is known to mean "client 127.0.0.1" and not just
// to be classified that way.
func TestTeredoExample(t *testing.T) {
	server := netip.MustParseAddr("65.54.227.120").As4()
	client := netip.MustParseAddr("127.0.0.1").As4()
	var b [16]byte
	b[0], b[1] = 0x20, 0x01
	copy(b[4:8], server[:])
	b[8], b[9], b[10], b[11] = 0x80, 0x00, 0x63, 0xbf // flags, obfuscated port
	for i, v := range client {
		b[12+i] = v ^ 0xff
	}
	got := netip.AddrFrom16(b)
	want := netip.MustParseAddr("2001:0:4136:e378:8000:63bf:80ff:fffe")
	if got != want {
		t.Errorf("Teredo(server 65.54.227.120, client 127.0.0.1) = %s, want %s", got, want)
	}
}

func BenchmarkClassify(b *testing.B) {
	addrs := make([]netip.Addr, len(classCases))
	for i, tc := range classCases {
		addrs[i] = netip.MustParseAddr(tc.addr)
	}
	var n int
	for b.Loop() {
		for _, ip := range addrs {
			if Classify(ip) == Public {
				n++
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(addrs)), "ns/addr")
	_ = n
}
