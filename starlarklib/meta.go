package starlarklib

import (
	"fmt"
	"strings"
	"sync"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// metaFields are the attributes of meta, sorted as dir() shows them.
var metaFields = []string{"attempt", "content_type", "correlation_id", "exchange", "headers", "message_id",
	"queue", "redelivered", "routing_key", "task", "timestamp"}

// meta is what a handler gets as its second argument: the delivery's
// properties as read-only attributes. It reads them from the delivery as
// they are asked for, so a handler that never looks at the headers never
// pays for converting them.
type meta struct {
	d    *tasks.Delivery
	spec *tasks.Spec

	once    sync.Once
	headers starlark.Value
	err     error
}

var _ starlark.HasAttrs = (*meta)(nil)

func newMeta(d *tasks.Delivery, spec *tasks.Spec) *meta { return &meta{d: d, spec: spec} }

func (m *meta) Type() string          { return "struct" }
func (m *meta) Freeze()               {}
func (m *meta) Truth() starlark.Bool  { return true }
func (m *meta) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable type: meta") }
func (m *meta) AttrNames() []string   { return metaFields }

func (m *meta) String() string {
	var b strings.Builder
	b.WriteString("meta(")
	for i, name := range metaFields {
		if i > 0 {
			b.WriteString(", ")
		}
		v, err := m.Attr(name)
		if err != nil {
			v = starlark.String("<" + err.Error() + ">")
		}
		fmt.Fprintf(&b, "%s = %s", name, v)
	}
	b.WriteString(")")
	return b.String()
}

func (m *meta) Attr(name string) (starlark.Value, error) {
	d := m.d
	switch name {
	case "routing_key":
		return starlark.String(d.RoutingKey), nil
	case "exchange":
		return starlark.String(d.Exchange), nil
	case "queue":
		if d.Queue == "" {
			return starlark.String(m.spec.Queue), nil
		}
		return starlark.String(d.Queue), nil
	case "task":
		if d.Task == "" {
			return starlark.String(m.spec.Name), nil
		}
		return starlark.String(d.Task), nil
	case "message_id":
		return starlark.String(d.MessageID), nil
	case "correlation_id":
		return starlark.String(d.CorrelationID), nil
	case "content_type":
		return starlark.String(d.ContentType), nil
	case "headers":
		m.once.Do(func() {
			m.headers, m.err = fromGo(d.Headers)
			if m.err != nil {
				m.err = fmt.Errorf("meta.headers: %w", m.err)
			}
		})
		return m.headers, m.err
	case "timestamp":
		return timeValue(d.Timestamp), nil
	case "redelivered":
		return starlark.Bool(d.Redelivered), nil
	case "attempt":
		return starlark.MakeInt(d.Attempt), nil
	}
	return nil, nil // starlark reports the missing attribute
}
