package egress

import (
	"net/netip"
	"strconv"
)

// Class says what kind of destination an IP address is, as far as the
// guard is concerned. The zero value is Invalid, so a Class that was never
// set refuses rather than allows.
type Class uint8

// The classes Classify returns.
const (
	// Invalid is the zero netip.Addr: no address at all.
	Invalid Class = iota
	// Public is a globally routable unicast address: the only class the
	// zero Guard lets through.
	Public
	// Loopback is 127.0.0.0/8 and ::1.
	Loopback
	// Private is RFC 1918 (10/8, 172.16/12, 192.168/16), IPv6 unique-local
	// fc00::/7, and the local-use NAT64 prefix 64:ff9b:1::/48.
	Private
	// CGNAT is the shared address space 100.64.0.0/10 (RFC 6598).
	CGNAT
	// LinkLocal is 169.254.0.0/16 and fe80::/10.
	LinkLocal
	// Multicast is 224.0.0.0/4 and ff00::/8.
	Multicast
	// Unspecified is 0.0.0.0 and ::, which a dial sends to the local host.
	Unspecified
	// Reserved is every other address that is not public unicast:
	// 0.0.0.0/8, 192.0.0.0/24, the documentation and benchmarking ranges,
	// 240.0.0.0/4 and the broadcast address, and in IPv6 everything
	// outside 2000::/3 not named above (site-local fec0::/10, discard
	// 100::/64, ...) plus 2001:db8::/32, 3fff::/20, 2001:2::/48 and ORCHID.
	Reserved
	// Metadata is a cloud provider's instance metadata or credential
	// endpoint (see metadataAddrs). It is refused even with
	// Guard.AllowPrivate.
	Metadata
)

var classNames = [...]string{
	Invalid:     "invalid",
	Public:      "public",
	Loopback:    "loopback",
	Private:     "private",
	CGNAT:       "cgnat",
	LinkLocal:   "link-local",
	Multicast:   "multicast",
	Unspecified: "unspecified",
	Reserved:    "reserved",
	Metadata:    "metadata",
}

// String returns the class's lowercase name ("private", "link-local",
// ...), suitable as a log value or a metric label.
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// internal reports whether the class is an address on the operator's own
// networks, the ones Guard.AllowPrivate opens.
func (c Class) internal() bool {
	switch c {
	case Loopback, Private, CGNAT, LinkLocal:
		return true
	}
	return false
}

// severity orders classes for the addresses that embed two IPv4
// addresses (Teredo) or may embed one in several places (local-use
// NAT64): the result is the more restricted of the candidates.
func (c Class) severity() int {
	switch {
	case c == Public:
		return 0
	case c.internal():
		return 1
	case c == Metadata:
		return 3
	}
	return 2
}

func worse(a, b Class) Class {
	if b.severity() > a.severity() {
		return b
	}
	return a
}

// metadataAddrs are the instance metadata, credential and platform
// endpoints of the common clouds. Most sit inside ranges that are refused
// anyway; they are listed so that AllowPrivate does not open them, and
// 168.63.129.16 because it is public address space.
var metadataAddrs = map[netip.Addr]struct{}{
	netip.MustParseAddr("169.254.169.254"): {}, // AWS, GCP, Azure, OpenStack, DigitalOcean, ... IMDS
	netip.MustParseAddr("169.254.169.253"): {}, // AWS VPC DNS resolver
	netip.MustParseAddr("169.254.170.2"):   {}, // AWS ECS task metadata and credentials
	netip.MustParseAddr("169.254.170.23"):  {}, // AWS EKS Pod Identity agent (credentials)
	netip.MustParseAddr("169.254.0.23"):    {}, // Tencent Cloud metadata (metadata.tencentyun.com)
	netip.MustParseAddr("100.100.100.200"): {}, // Alibaba Cloud metadata
	netip.MustParseAddr("192.0.0.192"):     {}, // Oracle Cloud metadata
	netip.MustParseAddr("168.63.129.16"):   {}, // Azure WireServer (host agent), public address space
	netip.MustParseAddr("fd00:ec2::254"):   {}, // AWS IMDS over IPv6
	netip.MustParseAddr("fd00:ec2::253"):   {}, // AWS VPC DNS resolver over IPv6
	netip.MustParseAddr("fd00:ec2::23"):    {}, // AWS EKS Pod Identity agent over IPv6
	netip.MustParseAddr("fd20:ce::254"):    {}, // GCP metadata server over IPv6
	netip.MustParseAddr("fe80::a9fe:a9fe"): {}, // OpenStack metadata over IPv6 (link-local, any zone)
}

var (
	cgnat4 = netip.MustParsePrefix("100.64.0.0/10")

	reserved4 = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),       // "this network" (RFC 791)
		netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
		netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
		netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
		netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
		netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
		netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255 broadcast
	}

	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	reserved6      = []netip.Prefix{
		netip.MustParsePrefix("2001:db8::/32"), // documentation
		netip.MustParsePrefix("3fff::/20"),     // documentation (RFC 9637)
		netip.MustParsePrefix("2001:2::/48"),   // benchmarking
		netip.MustParsePrefix("2001:10::/28"),  // ORCHID (deprecated)
		netip.MustParsePrefix("2001:20::/28"),  // ORCHIDv2
	}

	// IPv6 forms that carry an IPv4 address. A dial to one of them can
	// reach that IPv4 address through a translator or tunnel, so the
	// embedded address is what gets classified.
	compat6    = netip.MustParsePrefix("::/96")           // IPv4-compatible (deprecated)
	siit6      = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated (RFC 2765)
	nat64WKP   = netip.MustParsePrefix("64:ff9b::/96")    // NAT64 well-known prefix (RFC 6052)
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")  // NAT64 local-use prefix (RFC 8215)
	sixToFour  = netip.MustParsePrefix("2002::/16")       // 6to4: IPv4 in bits 16-47
	teredo     = netip.MustParsePrefix("2001::/32")       // Teredo: server in bits 32-63, client (inverted) in 96-127
)

// Classify says what kind of destination ip is. It is a pure function of
// the address: the zone of a scoped address is ignored, and an IPv6
// address that embeds an IPv4 address (IPv4-mapped ::ffff:a.b.c.d,
// IPv4-compatible ::a.b.c.d, IPv4-translated ::ffff:0:a.b.c.d, NAT64
// 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32) gets the class of the
// IPv4 address, since that is where a translator or tunnel delivers it.
// Teredo carries two IPv4 addresses (server and client) and gets the more
// restricted of the two classes. The local-use NAT64 prefix 64:ff9b:1::/48
// is Private, or Metadata when any of the RFC 6052 layouts a network may
// use within it embeds a metadata address, or the class of the /96
// embedding when that is more restricted.
func Classify(ip netip.Addr) Class {
	if !ip.IsValid() {
		return Invalid
	}
	ip = ip.WithZone("")
	if ip.Is4() {
		return classify4(ip)
	}
	return classify6(ip)
}

func classify4(ip netip.Addr) Class {
	if _, ok := metadataAddrs[ip]; ok {
		return Metadata
	}
	switch {
	case ip.IsUnspecified():
		return Unspecified
	case ip.IsLoopback():
		return Loopback
	case ip.IsPrivate():
		return Private
	case cgnat4.Contains(ip):
		return CGNAT
	case ip.IsLinkLocalUnicast():
		return LinkLocal
	case ip.IsMulticast():
		return Multicast
	}
	for _, p := range reserved4 {
		if p.Contains(ip) {
			return Reserved
		}
	}
	return Public
}

func classify6(ip netip.Addr) Class {
	if _, ok := metadataAddrs[ip]; ok {
		return Metadata
	}
	b := ip.As16()
	switch {
	case ip.IsUnspecified():
		return Unspecified
	case ip.IsLoopback():
		return Loopback
	case ip.Is4In6():
		return classify4(ip.Unmap())
	case compat6.Contains(ip), siit6.Contains(ip), nat64WKP.Contains(ip):
		return classify4(v4At(b, 12))
	case nat64Local.Contains(ip):
		return classifyNAT64Local(b)
	case sixToFour.Contains(ip):
		return classify4(v4At(b, 2))
	case teredo.Contains(ip):
		client := v4At(b, 12).As4()
		for i := range client {
			client[i] ^= 0xff
		}
		return worse(classify4(v4At(b, 4)), classify4(netip.AddrFrom4(client)))
	case ip.IsPrivate():
		return Private
	case ip.IsLinkLocalUnicast():
		return LinkLocal
	case ip.IsMulticast():
		return Multicast
	case !globalUnicast6.Contains(ip):
		return Reserved
	}
	for _, p := range reserved6 {
		if p.Contains(ip) {
			return Reserved
		}
	}
	return Public
}

// classifyNAT64Local classifies an address in 64:ff9b:1::/48. The range is
// not globally routable, so it is at least Private. The prefix length a
// network carves out of it (/48, /56, /64 or /96) decides where the IPv4
// address sits and cannot be known from here, so every layout is decoded:
// one that lands on a metadata address makes the whole address Metadata,
// which AllowPrivate cannot open. Only the /96 layout, the common one, is
// otherwise classified, because decoding the others from an ordinary /96
// address yields meaningless 0.x.x.x addresses.
func classifyNAT64Local(b [16]byte) Class {
	for _, plen := range [...]int{48, 56, 64} {
		if classify4(rfc6052(b, plen)) == Metadata {
			return Metadata
		}
	}
	return worse(Private, classify4(v4At(b, 12)))
}

// rfc6052 extracts the IPv4 address embedded after a NAT64 prefix of
// length plen (48, 56 or 64), skipping the reserved octet at bits 64-71
// (RFC 6052 section 2.2).
func rfc6052(b [16]byte, plen int) netip.Addr {
	var v4 [4]byte
	j := plen / 8
	for i := range v4 {
		if j == 8 {
			j++
		}
		v4[i] = b[j]
		j++
	}
	return netip.AddrFrom4(v4)
}

func v4At(b [16]byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte(b[i : i+4]))
}
