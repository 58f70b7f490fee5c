package starlarklib

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// httpClient is the real HTTPClient. Each set of allow_hosts gets its own
// transport, so connections are reused across the messages of a task (and
// of tasks with the same grant), and a connection one task may make is
// never handed to a task that may not.
type httpClient struct {
	rootCAs  *x509.CertPool
	resolver *net.Resolver

	mu      sync.Mutex
	clients map[string]*http.Client
}

func newHTTPClient(rootCAs *x509.CertPool, resolver *net.Resolver) *httpClient {
	return &httpClient{rootCAs: rootCAs, resolver: resolver, clients: map[string]*http.Client{}}
}

// maxRedirects is how many redirects a request follows.
const maxRedirects = 10

func (h *httpClient) client(allow []string) *http.Client {
	key := strings.Join(allow, "\x00")
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.clients[key]; c != nil {
		return c
	}
	allow = slices.Clone(allow)
	t := &http.Transport{
		// No proxy from the environment: the guard checks the addresses
		// it dials, and a proxy would dial for it.
		Proxy:                 nil,
		DialContext:           guardedDial(allow, h.resolver),
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if h.rootCAs != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: h.rootCAs, MinVersion: tls.VersionTLS12}
	}
	c := &http.Client{
		Transport: t,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			u := req.URL
			if u.Scheme != "http" && u.Scheme != "https" {
				return refusedf("redirected to %s: unsupported URL scheme %q", shownURL(u), u.Scheme)
			}
			if !hostAllowed(allow, u.Hostname(), portOf(u)) {
				return refusedf("redirected to %s: host %s is not in allow_hosts (%s)", shownURL(u), u.Host, strings.Join(allow, ", "))
			}
			return nil
		},
	}
	h.clients[key] = c
	return c
}

// guardedDial dials only public addresses, and the addresses of hosts
// listed in allow: the check is of the address actually dialled, after
// DNS, so a public name that resolves to 127.0.0.1 or 169.254.169.254 is
// refused, whatever the name.
func guardedDial(allow []string, resolver *net.Resolver) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		listed := hostListed(allow, host, port)
		d := &net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
			Resolver:  resolver,
			Control: func(_, address string, _ syscall.RawConn) error {
				ip, _, err := net.SplitHostPort(address)
				if err != nil {
					return err
				}
				a, err := netip.ParseAddr(ip)
				if err != nil {
					return err
				}
				if !listed && !publicAddr(a) {
					return refusedf("%s is %s, a private, loopback or link-local address: list %q in allow_hosts to allow it",
						host, a, host)
				}
				return nil
			},
		}
		return d.DialContext(ctx, network, addr)
	}
}

// Do implements HTTPClient.
func (h *httpClient) Do(ctx context.Context, r *HTTPRequest) (*HTTPResponse, error) {
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	var body io.Reader
	if r.Body != nil {
		body = strings.NewReader(string(r.Body))
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "symphony")
	}
	resp, err := h.client(r.AllowHosts).Do(req)
	if err != nil {
		return nil, httpError(ctx, err, r.Timeout)
	}
	defer resp.Body.Close()
	max := r.MaxBytes
	if max <= 0 {
		max = DefaultHTTPMaxBytes
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("read the response (status %d): %w", resp.StatusCode, httpError(ctx, err, r.Timeout))
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("the response body (status %d) is larger than max_bytes (%d bytes)", resp.StatusCode, max)
	}
	return &HTTPResponse{Status: resp.StatusCode, Header: resp.Header, Body: b, URL: resp.Request.URL.String()}, nil
}

// httpError drops net/http's "Get URL:" prefix (the caller names the
// URL, without its query) and says why a context ended it.
func httpError(ctx context.Context, err error, timeout time.Duration) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); errors.Is(cause, context.DeadlineExceeded) && timeout > 0 {
			return fmt.Errorf("no response within timeout (%s): %w", timeout, err)
		}
		return fmt.Errorf("%w (%v)", err, context.Cause(ctx))
	}
	return err
}
