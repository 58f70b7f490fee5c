package tasks

import "testing"

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"amqps://user:s3cret@rabbit/vhost", "amqps://user:xxxxx@rabbit/vhost"},
		// A password that does not parse as a URL.
		{"amqp://user:p%a#s/s?w d@host:5672/v", "amqp://user:xxxxx@host:5672/v"},
		{"amqp://user:a@b@host/", "amqp://user:xxxxx@host/"},
		{"amqp://user@host/", "amqp://user@host/"},
		{"amqp://host:5672/", "amqp://host:5672/"},
		{"sqlite:symphony.db", "sqlite:symphony.db"},
		{"sqlite:/var/lib/x@y.db", "sqlite:/var/lib/x@y.db"},
		{"", ""},
		// A cluster's nodes; a comma in a password does not split.
		{"amqp://u:p1@h1/,amqps://u:p,2@h2/", "amqp://u:xxxxx@h1/,amqps://u:xxxxx@h2/"},
		{"amqp://u:p,amqp@h1/", "amqp://u:xxxxx@h1/"},
	} {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestURLPassword(t *testing.T) {
	for in, want := range map[string]string{
		"mysql://u:p%zz#s/s?w@h/db":  "p%zz#s/s?w",
		"postgres://u:a@b@h/db":      "a@b",
		"postgres://u@h/db":          "",
		"postgres://h/db":            "",
		"sqlite:/var/lib/x:y@z.db":   "",
		"mysql://u:@h/db":            "",
		"amqp://guest:guest@h:5672/": "guest",
	} {
		if got := URLPassword(in); got != want {
			t.Errorf("URLPassword(%q) = %q, want %q", in, got, want)
		}
	}
}
