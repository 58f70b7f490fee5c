package starlarklib

import (
	"errors"
	"fmt"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// publishBuiltin is publish(routing_key, payload, headers = {},
// content_type = None, delay = None, priority = None). It buffers the message on the run;
// the engine sends the run's messages only if the handler succeeds.
func publishBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		key         string
		payload     starlark.Value
		headers     starlark.Value = starlark.None
		contentType starlark.Value = starlark.None
		delay       starlark.Value = starlark.None
		priority    starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs,
		"routing_key", &key, "payload", &payload, "headers?", &headers,
		"content_type?", &contentType, "delay?", &delay, "priority?", &priority); err != nil {
		return nil, err
	}
	st := stateOf(th)
	if msg := notDuringLoad(b.Name(), st); msg != "" {
		return nil, errors.New(msg)
	}
	if err := tasks.ValidateRoutingKey(key); err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}

	var ct string
	if contentType != starlark.None {
		s, ok := contentType.(starlark.String)
		if !ok || s == "" {
			return nil, fmt.Errorf("%s: content_type must be a non-empty string such as \"application/json\", got %s", b.Name(), describe(contentType))
		}
		ct = string(s)
	}
	body, ct, err := encodePayload(th, payload, ct)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}

	p := tasks.Publication{RoutingKey: key, Body: body, ContentType: ct}
	if headers != starlark.None {
		d, ok := headers.(*starlark.Dict)
		if !ok {
			return nil, fmt.Errorf("%s: headers must be a dict, got %s", b.Name(), describe(headers))
		}
		if d.Len() > 0 {
			g, err := toGo(d, false)
			if err != nil {
				return nil, fmt.Errorf("%s: headers: %v", b.Name(), err)
			}
			p.Headers = g.(map[string]any)
		}
	}
	if delay != starlark.None {
		d, err := nonNegativeDuration("delay", delay)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		p.Delay = d
	}
	if priority != starlark.None {
		n, ok := priority.(starlark.Int)
		i, fits := n.Int64()
		if !ok || !fits {
			return nil, fmt.Errorf("%s: priority must be an int from 0 to %d, got %s", b.Name(), tasks.PriorityLimit, describe(priority))
		}
		if i < 0 || i > tasks.PriorityLimit {
			return nil, fmt.Errorf("%s: priority %s is out of range: use 0 to %d (a task's max_priority is at most %d)",
				b.Name(), priority, tasks.PriorityLimit, tasks.PriorityLimit)
		}
		p.Priority = int(i)
	}
	st.publications = append(st.publications, p)
	return starlark.None, nil
}
