package amqp

import (
	"math"
	"reflect"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestHeaderJSON(t *testing.T) {
	for _, c := range []struct {
		in   any
		want string
	}{
		{int8(-1), `-1`},
		{uint32(4000000000), `4000000000`},
		{int64(-9007199254740993), `-9007199254740993`},
		{1.0, `1.0`},
		{float32(0.1), `0.1`},
		{1e21, `1e+21`},
		{math.NaN(), `"NaN"`},
		{math.Inf(-1), `"-Inf"`},
		{amqp.Decimal{Scale: 3, Value: -1500}, `-1.500`},
		{amqp.Decimal{Scale: 0, Value: 42}, `42`},
		{[]byte("ok"), `"ok"`},
		{[]byte{0xc3, 0x28}, `"wyg="`},
		{time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), `"2024-01-02T03:04:05Z"`},
		{nil, `null`},
		{"<&>", `"<&>"`},
		{[]any{true, amqp.Table{"a": []any{}}}, `[true,{"a":[]}]`},
	} {
		got := tableJSON(amqp.Table{"v": c.in})
		if want := `{"v":` + c.want + `}`; got != want {
			t.Errorf("%T %v: got %s, want %s", c.in, c.in, got, want)
		}
	}
}

// What handlers read, published again, has the same types.
func TestHeaderRoundTrip(t *testing.T) {
	in := amqp.Table{
		"int": int64(7), "float": 2.0, "small": 0.25, "s": "x", "b": false, "null": nil,
		"deep": amqp.Table{"list": []any{int64(1), amqp.Table{"x": 1.5}}},
	}
	out, err := tableFromJSON(tableJSON(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip\n got %#v\nwant %#v", out, in)
	}
	if _, err := tableFromJSON(`[1]`); err == nil {
		t.Error("headers that are not an object accepted")
	}
}

func TestUserHeadersDropOurDelayDeaths(t *testing.T) {
	b := &Broker{exchange: "ex"}
	h := amqp.Table{
		"x-death": []any{
			amqp.Table{"queue": "ex.retry.1000", "reason": "expired", "count": int64(1)},
			amqp.Table{"queue": "theirs", "reason": "rejected", "count": int64(2)},
		},
		"x-first-death-queue":    "ex.delay.500",
		"x-first-death-reason":   "expired",
		"x-first-death-exchange": "ex.delay.500",
		"x-symphony-attempt":     int64(2),
		"app":                    "kept",
	}
	got := b.userHeaders(h)
	want := amqp.Table{
		"x-death": []any{amqp.Table{"queue": "theirs", "reason": "rejected", "count": int64(2)}},
		"app":     "kept",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v", got, want)
	}
	for _, name := range []string{"ex.retry.x", "ex.retry", "other.retry.1", "ex.later.5"} {
		if b.isDelayQueue(name) {
			t.Errorf("%q taken for a delay queue", name)
		}
	}
}
