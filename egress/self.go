package egress

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
)

// Self is the set of addresses hookproxy itself listens on (the proxy
// port and the admin API). Nothing hookproxy sends on its own or on
// someone else's behalf may connect to them: a request passed through the
// proxy to 127.0.0.1:9090 would otherwise reach an admin API that is bound
// to loopback precisely so that the network cannot reach it, and a
// subscriber URL naming it would be delivered to it under
// HOOKPROXY_ALLOW_PRIVATE_TARGETS.
//
// A nil *Self refuses nothing. A Self must not be changed once in use.
type Self struct {
	listeners []netip.AddrPort
	local     func() []netip.Addr
}

// NewSelf returns the Self of the given listener addresses (each a
// *net.TCPAddr, as net.Listener.Addr returns; others are ignored). local
// returns the host's own interface addresses, through which a listener
// on an unspecified address (":9090", "[::]:9090") is reached as well as
// through loopback. It is called for each check that needs them (a dial
// to such a listener's port at an address that is not loopback), so that
// an address the host gains after start is known too; nil: none.
func NewSelf(listeners []net.Addr, local func() []netip.Addr) *Self {
	s := &Self{local: local}
	for _, a := range listeners {
		if ta, ok := a.(*net.TCPAddr); ok {
			s.listeners = append(s.listeners, ta.AddrPort())
		}
	}
	return s
}

// isLocal reports whether ip is one of the host's interface addresses.
func (s *Self) isLocal(ip netip.Addr) bool {
	if s.local == nil {
		return false
	}
	return slices.ContainsFunc(s.local(), func(a netip.Addr) bool { return a.WithZone("").Unmap() == ip })
}

// SelfError is a refused connection to one of hookproxy's own listeners.
// errors.Is(err, ErrBlocked) is true: a delivery refused this way is
// refused the same way on every retry.
type SelfError struct {
	// Addr is the address as dialled.
	Addr netip.AddrPort
}

// Error names the address refused.
func (e *SelfError) Error() string {
	return fmt.Sprintf("blocked: %s is hookproxy's own listener", e.Addr)
}

// Is makes errors.Is(err, ErrBlocked) true.
func (e *SelfError) Is(target error) bool { return target == ErrBlocked }

// Check returns a *SelfError when a connection to ap would reach one of
// the listeners, and nil otherwise. A listener is reached through its own
// address and the unspecified address (a dial to 0.0.0.0 or :: goes to
// the local host); one on a loopback address through every loopback
// address too, and one on an unspecified address through every loopback
// and local address (as local says at the time of the check).
func (s *Self) Check(ap netip.AddrPort) error {
	if s == nil {
		return nil
	}
	ip := ap.Addr().WithZone("").Unmap()
	for _, l := range s.listeners {
		if l.Port() != ap.Port() {
			continue
		}
		lip := l.Addr().WithZone("").Unmap()
		switch {
		case ip == lip, ip.IsUnspecified(),
			lip.IsLoopback() && ip.IsLoopback(),
			lip.IsUnspecified() && (ip.IsLoopback() || s.isLocal(ip)):
			return &SelfError{Addr: ap}
		}
	}
	return nil
}

// Control checks the address a net.Dialer is about to connect to, as
// Guard.Control does; it has the signature of net.Dialer.Control. The
// socket is not connected yet, so a refused address is sent nothing.
func (s *Self) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("check %s destination %q: %w", network, address, err)
	}
	return s.Check(ap)
}
