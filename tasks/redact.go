package tasks

import "strings"

// RedactURL returns a URL fit for logs (a broker's, a database's): the password of each URL
// (several, comma-separated, name a cluster's nodes) is replaced. It works
// on the text, not on a parsed URL, so that a URL that does not parse (a
// password with an unencoded %, #, / or ?) is redacted too: whatever
// follows "://" up to the last "@" is the user information, and all of it
// after the user name's ":" is the password.
func RedactURL(raw string) string {
	var out strings.Builder
	for i, part := range splitURLs(raw) {
		if i > 0 {
			out.WriteByte(',')
		}
		scheme, rest, ok := strings.Cut(part, "://")
		at := strings.LastIndexByte(rest, '@')
		if !ok || at < 0 {
			out.WriteString(part)
			continue
		}
		user, _, hasPassword := strings.Cut(rest[:at], ":")
		out.WriteString(scheme + "://" + user)
		if hasPassword {
			out.WriteString(":xxxxx")
		}
		out.WriteString(rest[at:])
	}
	return out.String()
}

// splitURLs splits a list of URLs at each comma that starts another
// URL ("scheme://"), so that a comma in a password does not split it.
func splitURLs(raw string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(raw); i++ {
		if raw[i] != ',' {
			continue
		}
		scheme, _, ok := strings.Cut(raw[i+1:], "://")
		if ok && scheme != "" && !strings.ContainsAny(scheme, ",@:/") {
			parts = append(parts, raw[start:i])
			start = i + 1
		}
	}
	return append(parts, raw[start:])
}

// URLPassword returns the password of one URL, read from its text as
// RedactURL reads it (all of the user information after the user name's
// ":"), so that it can be scrubbed from messages that quote the URL in
// part; "" if there is none.
func URLPassword(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	at := strings.LastIndexByte(rest, '@')
	if !ok || at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}
