package starlarklib

import (
	"strings"
	"testing"

	"github.com/symphony-go/symphony/tasks"
)

// runChecks runs lines (Starlark, indented by four spaces) as a task's
// work function, with eq(got, want) and fails(fn, text) at hand, and
// fails the test with the script's error.
func runChecks(t *testing.T, taskArgs, lines string, opts Options) tasks.Result {
	t.Helper()
	src := `
def eq(got, want):
    if got != want:
        fail("got %r, want %r" % (got, want))
def work(payload, meta):
` + lines + `
task(subscribe_to = ["#"], work = work` + taskArgs + `)
`
	r := handle(loadTask(t, src, opts), "application/json", []byte(`{}`))
	if r.Verdict != tasks.Succeeded {
		t.Fatalf("verdict = %s: %v\n%s", r.Verdict, r.Err, r.Backtrace)
	}
	return r
}

// failedRun runs lines as a work function and returns the run's error.
func failedRun(t *testing.T, taskArgs, lines string, opts Options) string {
	t.Helper()
	src := "def work(payload, meta):\n" + lines + "\ntask(subscribe_to = [\"#\"], work = work" + taskArgs + ")\n"
	r := handle(loadTask(t, src, opts), "application/json", []byte(`{}`))
	if r.Verdict != tasks.Failed {
		t.Fatalf("verdict = %s, want failed", r.Verdict)
	}
	return r.Err.Error()
}

func TestHelpers(t *testing.T) {
	runChecks(t, "", `
    # re, as Python's
    m = re.match(r"(\w+)@(?P<host>[\w.]+)", "ada@example.com rest")
    eq(m.group(), "ada@example.com")
    eq(m.group(1), "ada")
    eq(m.group("host"), "example.com")
    eq(m.group(1, 2), ("ada", "example.com"))
    eq(m.groups(), ("ada", "example.com"))
    eq(m.groupdict(), {"host": "example.com"})
    eq((m.start(), m.end(2), m.span(1)), (0, 15, (0, 3)))
    eq(re.match("b", "ab"), None)
    eq(re.search("b", "ab").group(), "b")
    eq(re.fullmatch("a+", "aab"), None)
    eq(re.fullmatch("a+b", "aab").group(), "aab")
    eq(re.match("(a)|(b)", "b").groups(), (None, "b"))
    eq(re.match("(a)|(b)", "b").groups("-"), ("-", "b"))
    eq(re.find_all(r"\d+", "a1b22c333"), ["1", "22", "333"])
    eq(re.find_all(r"(\w)=(\d)", "a=1 b=2"), [("a", "1"), ("b", "2")])
    eq(re.find_all(r"(\w)=\d", "a=1 b=2"), ["a", "b"])
    eq(re.sub(r"(\w+)@(\w+)", r"\2 at \1", "ada@home bob@work"), "home at ada work at bob")
    eq(re.sub(r"(?P<n>\d)", r"<\g<n>>$", "a1b2", count = 1), "a<1>$b2")
    eq(re.sub(r"\d", lambda m: str(int(m.group()) * 2), "a1b4"), "a2b8")
    eq(re.split(r"[,;]\s*", "a, b;c"), ["a", "b", "c"])
    eq(re.split(r"([,;])", "a,b;c", maxsplit = 1), ["a", ",", "b;c"])
    eq(re.escape("a.b*c"), r"a\.b\*c")
    eq(re.search("(?i)HELLO", "say hello").group(), "hello")

    # base64 and hex
    eq(base64.encode("hi?>"), "aGk/Pg==")
    eq(base64.urlsafe_encode(b"hi?>"), "aGk_Pg==")
    eq(base64.decode("aGk/Pg=="), b"hi?>")
    eq(base64.decode("aGk/Pg"), b"hi?>")
    eq(base64.urlsafe_decode("aGk_Pg"), b"hi?>")
    eq(hex.encode(b"\x01\xff"), "01ff")
    eq(hex.decode("01FF"), b"\x01\xff")

    # hash and hmac (RFC 4231 test case 2)
    eq(hash.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    eq(hash.md5(b""), "d41d8cd98f00b204e9800998ecf8427e")
    eq(hash.sha1("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d")
    eq(len(hash.sha512("abc")), 128)
    eq(hash.hmac("sha256", "Jefe", "what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    eq(hash.compare_digest("abc", "abc"), True)
    eq(hash.compare_digest("abc", "abd"), False)
    eq(type(hash("x")), "int")

    # uuid
    a, b = uuid.v4(), uuid.v7()
    eq(len(a), 36)
    eq(a[14], "4")
    eq(b[14], "7")
    eq(uuid.v7() > b, True)

    # url
    u = url.parse("https://ada@example.com:8443/a%20b?x=1&y=2&x=3#top")
    eq((u.scheme, u.username, u.host, u.port, u.path, u.query, u.fragment), ("https", "ada", "example.com", 8443, "/a b", "x=1&y=2&x=3", "top"))
    eq(u.params, {"x": "1", "y": "2"})
    eq(url.parse("http://h/").port, None)
    eq(url.quote("a b/c?d=é"), "a%20b/c%3Fd%3D%C3%A9")
    eq(url.quote("a/b", safe = ""), "a%2Fb")
    eq(url.quote_plus("a b&c"), "a+b%26c")
    eq(url.unquote("a%20b%2F"), "a b/")
    eq(url.unquote_plus("a+b%26"), "a b&")
    eq(url.encode({"q": "a b", "n": 1, "t": [True, "x"], "none": None}), "q=a+b&n=1&t=True&t=x")
    eq(url.join("https://h/a/b", "../c"), "https://h/c")

    # template
    eq(template.render("Hi {{.name}}: {{range .items}}[{{.}}]{{end}}", {"name": "Ada", "items": [1, 2]}), "Hi Ada: [1][2]")
`, Options{})
}

func TestHelperErrors(t *testing.T) {
	cases := []struct{ line, want string }{
		{`re.match("(", "x")`, `re.match: bad pattern "(": missing closing )`},
		{`re.sub("a", r"\2", "a")`, `re.sub: invalid group reference 2: the pattern has 0 groups`},
		{`base64.decode("!!")`, `base64.decode: not valid base64`},
		{`hex.decode("zz")`, `hex.decode: not hex`},
		{`hash.hmac("sha3", "k", "m")`, `hash.hmac: unknown algorithm "sha3": use "md5", "sha1", "sha256" or "sha512"`},
		{`hash.sha256(1)`, `hash.sha256: got int, want str or bytes`},
		{`template.render("{{.missing}}", {})`, `template.render: template: template:1:2: executing "template" at <.missing>: map has no entry for key "missing"`},
		{`template.render("{{.x", {})`, `template.render: template: template:1: unclosed action`},
		{`url.parse("http://[::1")`, `url.parse: "http://[::1": missing ']' in host`},
		{`url.encode({"a": {}})`, `url.encode: value of "a" is a dict`},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			if got := failedRun(t, "", "    "+c.line, Options{}); !strings.Contains(got, c.want) {
				t.Errorf("error = %q, want it to contain %q", got, c.want)
			}
		})
	}
}
