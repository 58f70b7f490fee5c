package starlarklib

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"go.starlark.net/lib/json"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/symphony-go/symphony/tasks"
)

// DefaultHTTPMaxBytes bounds a response body unless max_bytes says
// otherwise.
const DefaultHTTPMaxBytes = 10 << 20

// httpModule is http (SPEC §2.1): get, post, put, patch, delete and head
// (url, ...) and request(method, url, ...), each with the keyword
// arguments headers, params, body, json, form, timeout and max_bytes.
// The response is a struct: status, ok (2xx), headers (a dict with
// lower-case names), body (bytes), text (str), json() and url (after
// redirects). A status of any value is a response, not an error.
func httpModule() *starlarkstruct.Module {
	fns := map[string]builtinFunc{"request": httpRequest("")}
	for _, m := range []string{"get", "post", "put", "patch", "delete", "head"} {
		fns[m] = httpRequest(strings.ToUpper(m))
	}
	return newModule("http", fns)
}

func httpRequest(fixed string) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		method := fixed
		var (
			rawURL                                starlark.Value
			headers, params, body, jsonBody, form starlark.Value = starlark.None, starlark.None, starlark.None, starlark.None, starlark.None
			timeout, maxBytes                     starlark.Value = starlark.None, starlark.None
		)
		pairs := []any{"url", &rawURL, "headers?", &headers, "params?", &params, "body?", &body,
			"json?", &jsonBody, "form?", &form, "timeout?", &timeout, "max_bytes?", &maxBytes}
		if method == "" {
			pairs = append([]any{"method", &method}, pairs...)
		}
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, pairs...); err != nil {
			return nil, err
		}
		method = strings.ToUpper(method)
		st := stateOf(th)
		if msg := notDuringLoad(b.Name(), st); msg != "" {
			return nil, fmt.Errorf("%s", msg)
		}

		text, ok := textOf(rawURL)
		if !ok {
			return nil, fmt.Errorf("%s: url must be a str, got %s", b.Name(), rawURL.Type())
		}
		u, perr := url.Parse(text)
		target := ""
		if perr == nil {
			target = u.Hostname()
		}
		c, err := st.begin(b, tasks.CapHTTP, target)
		if err != nil {
			return nil, err
		}
		c.attr("method", method, "host", target)
		req, err := buildRequest(b.Name(), st.task.spec, method, u, perr, headers, params, body, jsonBody, form, timeout, maxBytes)
		if err != nil {
			return nil, c.end(err)
		}
		resp, err := st.world().HTTP.Do(c.ctx, req)
		if err != nil {
			return nil, c.end(fmt.Errorf("%s %s: %w", b.Name(), shownURL(u), err))
		}
		c.attr("status", resp.Status)
		c.end(nil)
		return responseValue(resp), nil
	}
}

// buildRequest checks a call's arguments into a request.
func buildRequest(fn string, spec tasks.Spec, method string, u *url.URL, perr error,
	headers, params, body, jsonBody, form, timeout, maxBytes starlark.Value) (*HTTPRequest, error) {
	if perr != nil {
		return nil, fmt.Errorf("%s: %v", fn, unwrapURLError(perr))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, refusedf("%s: unsupported URL scheme %q in %s: use http or https", fn, u.Scheme, shownURL(u))
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%s: %s has no host", fn, shownURL(u))
	}
	if method == "" || strings.ContainsAny(method, " \t\r\n") {
		return nil, fmt.Errorf("%s: %q is not an HTTP method", fn, method)
	}
	if !hostAllowed(spec.AllowHosts, u.Hostname(), portOf(u)) {
		return nil, refusedf("%s: host %s is not in allow_hosts of task %s (%s)", fn, u.Host, spec.Name, strings.Join(spec.AllowHosts, ", "))
	}
	req := &HTTPRequest{Task: spec.Name, Method: method, Header: map[string][]string{},
		MaxBytes: DefaultHTTPMaxBytes, AllowHosts: spec.AllowHosts}
	if params != starlark.None {
		m, ok := params.(starlark.IterableMapping)
		if !ok {
			return nil, fmt.Errorf("%s: params must be a dict, got %s", fn, params.Type())
		}
		q, _, err := encodeQuery(m)
		if err != nil {
			return nil, fmt.Errorf("%s: params: %v", fn, err)
		}
		if q != "" {
			u = cloneURL(u)
			if u.RawQuery != "" {
				u.RawQuery += "&"
			}
			u.RawQuery += q
		}
	}
	req.URL = u.String()
	if headers != starlark.None {
		m, ok := headers.(starlark.IterableMapping)
		if !ok {
			return nil, fmt.Errorf("%s: headers must be a dict, got %s", fn, headers.Type())
		}
		for _, kv := range m.Items() {
			k, ok := kv[0].(starlark.String)
			v, vok := textOf(kv[1])
			if !ok || !vok {
				return nil, fmt.Errorf("%s: headers must map str to str, got %s: %s", fn, kv[0].Type(), kv[1].Type())
			}
			req.Header[string(k)] = append(req.Header[string(k)], v)
		}
	}
	given := 0
	for _, v := range []starlark.Value{body, jsonBody, form} {
		if v != starlark.None {
			given++
		}
	}
	if given > 1 {
		return nil, fmt.Errorf("%s: give one of body, json and form", fn)
	}
	setType := func(ct string) {
		for k := range req.Header {
			if strings.EqualFold(k, "Content-Type") {
				return
			}
		}
		req.Header["Content-Type"] = []string{ct}
	}
	switch {
	case body != starlark.None:
		data, ok := dataOf(body)
		if !ok {
			return nil, fmt.Errorf("%s: body must be str or bytes, got %s: send a dict with json = or form =", fn, body.Type())
		}
		req.Body = data
	case jsonBody != starlark.None:
		s, err := starlark.Call(&starlark.Thread{}, json.Module.Members["encode"], starlark.Tuple{revealSecrets(jsonBody, 0)}, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: json: %v", fn, err)
		}
		req.Body = []byte(s.(starlark.String))
		setType("application/json")
	case form != starlark.None:
		m, ok := form.(starlark.IterableMapping)
		if !ok {
			return nil, fmt.Errorf("%s: form must be a dict, got %s", fn, form.Type())
		}
		q, _, err := encodeQuery(m)
		if err != nil {
			return nil, fmt.Errorf("%s: form: %v", fn, err)
		}
		req.Body = []byte(q)
		setType("application/x-www-form-urlencoded")
	}
	if timeout != starlark.None {
		d, err := nonNegativeDuration("timeout", timeout)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", fn, err)
		}
		req.Timeout = d
	}
	if maxBytes != starlark.None {
		n, err := parseBytes(maxBytes)
		if err != nil {
			return nil, fmt.Errorf("%s: max_bytes: %v", fn, err)
		}
		req.MaxBytes = n
	}
	return req, nil
}

func cloneURL(u *url.URL) *url.URL {
	c := *u
	return &c
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// shownURL is a URL as errors show it: without its user, password, query
// and fragment, where secrets and tokens travel.
func shownURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return c.String()
}

// revealSecrets copies v with every secret replaced by its value: for a
// body that is sent, never shown.
func revealSecrets(v starlark.Value, depth int) starlark.Value {
	if depth > maxDepth {
		return v
	}
	switch x := v.(type) {
	case secretValue:
		return starlark.String(x.value)
	case *starlark.Dict:
		d := starlark.NewDict(x.Len())
		for _, kv := range x.Items() {
			d.SetKey(kv[0], revealSecrets(kv[1], depth+1))
		}
		return d
	case *starlark.List:
		out := make([]starlark.Value, x.Len())
		for i := range out {
			out[i] = revealSecrets(x.Index(i), depth+1)
		}
		return starlark.NewList(out)
	case starlark.Tuple:
		out := make(starlark.Tuple, len(x))
		for i := range x {
			out[i] = revealSecrets(x[i], depth+1)
		}
		return out
	}
	return v
}

// responseValue is what a task sees of a response.
func responseValue(r *HTTPResponse) starlark.Value {
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	slices.Sort(names)
	headers := starlark.NewDict(len(names))
	for _, k := range names {
		headers.SetKey(starlark.String(strings.ToLower(k)), starlark.String(strings.Join(r.Header[k], ", ")))
	}
	body := r.Body
	return starlarkstruct.FromStringDict(starlark.String("response"), starlark.StringDict{
		"status":  starlark.MakeInt(r.Status),
		"ok":      starlark.Bool(r.Status >= 200 && r.Status < 300),
		"headers": headers,
		"body":    starlark.Bytes(body),
		"text":    starlark.String(body),
		"url":     starlark.String(r.URL),
		"json": starlark.NewBuiltin("response.json", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			if err := starlark.UnpackArgs(b.Name(), args, kwargs); err != nil {
				return nil, err
			}
			v, err := decodeJSON(body)
			if err != nil {
				return nil, fmt.Errorf("%s: the body (status %d) is not JSON: %v", b.Name(), r.Status, err)
			}
			return v, nil
		}),
	})
}
