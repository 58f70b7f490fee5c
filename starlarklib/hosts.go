package starlarklib

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// hostPattern is one entry of allow_hosts: a host name, an IP address or
// "*.domain" (any name under domain, not domain itself), with an optional
// ":port" ("[::1]:8080" for IPv6).
type hostPattern struct {
	host string // lower case; "*.example.com" keeps its star
	port string // empty: any port
}

func parseHostPattern(s string) (hostPattern, error) {
	bad := func(why string) (hostPattern, error) {
		return hostPattern{}, fmt.Errorf("%q is not a host: %s; give names such as \"api.example.com\", \"*.example.com\" or \"127.0.0.1:8080\"", s, why)
	}
	switch {
	case s == "":
		return bad("it is empty")
	case strings.Contains(s, "://"):
		return bad("write the host without a scheme")
	case strings.ContainsAny(s, "/?# \t@"):
		return bad("write the host alone, without a path")
	}
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad("the port must be a number from 1 to 65535")
		}
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	host = strings.ToLower(host)
	if _, err := netip.ParseAddr(host); err == nil {
		return hostPattern{host: host, port: port}, nil
	}
	name := strings.TrimPrefix(host, "*.")
	if strings.Contains(name, "*") {
		return bad("a wildcard stands only at the start, as in \"*.example.com\"")
	}
	if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, ":") {
		return bad("it is not a host name")
	}
	return hostPattern{host: host, port: port}, nil
}

func validHostPattern(s string) error {
	_, err := parseHostPattern(s)
	return err
}

// matches tells whether a request to host (a name or an address, lower
// case) on port is allowed by the pattern.
func (p hostPattern) matches(host, port string) bool {
	if p.port != "" && p.port != port {
		return false
	}
	if strings.HasPrefix(p.host, "*.") {
		return strings.HasSuffix(host, p.host[1:])
	}
	if a, err := netip.ParseAddr(p.host); err == nil {
		b, err := netip.ParseAddr(host)
		return err == nil && a.Unmap() == b.Unmap()
	}
	return p.host == host
}

// hostAllowed tells whether allow_hosts lets a task reach host:port by
// name: an empty list allows every host (private addresses are still
// refused when dialled).
func hostAllowed(patterns []string, host, port string) bool {
	if len(patterns) == 0 {
		return true
	}
	return hostListed(patterns, host, port)
}

// hostListed tells whether host:port is listed in allow_hosts, which also
// lets it reach private, loopback and link-local addresses.
func hostListed(patterns []string, host, port string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, s := range patterns {
		if p, err := parseHostPattern(s); err == nil && p.matches(host, port) {
			return true
		}
	}
	return false
}

// publicAddr tells whether an address may be dialled without being
// listed: not loopback, private (RFC 1918, fc00::/7), link-local
// (169.254.0.0/16, the cloud metadata service, fe80::/10), unspecified,
// multicast, CGNAT (100.64.0.0/10) or otherwise reserved.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
		return false
	}
	for _, p := range reservedPrefixes {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// reservedPrefixes are ranges that are not public besides those netip
// names.
var reservedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2001:db8::/32"),
}
