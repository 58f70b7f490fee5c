package starlarklib

import (
	"log/slog"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// logModule is log: log.debug/info/warn/error(msg, **attrs) write one
// structured line through the run's logger, which carries the task, the
// message id and the attempt (at load time: the file).
func logModule() *starlarkstruct.Module {
	levels := []struct {
		name  string
		level slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"info", slog.LevelInfo},
		{"warn", slog.LevelWarn},
		{"error", slog.LevelError},
	}
	m := &starlarkstruct.Module{Name: "log", Members: starlark.StringDict{}}
	for _, l := range levels {
		m.Members[l.name] = starlark.NewBuiltin("log."+l.name, logFunc(l.level))
	}
	return m
}

func logFunc(level slog.Level) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var msg starlark.Value
		if err := starlark.UnpackPositionalArgs(b.Name(), args, nil, 1, &msg); err != nil {
			return nil, err
		}
		text, ok := starlark.AsString(msg)
		if !ok {
			text = msg.String()
		}
		st := stateOf(th)
		ctx := st.context()
		if !st.logs(ctx, level) {
			return starlark.None, nil
		}
		attrs := make([]slog.Attr, 0, len(kwargs))
		for _, kv := range kwargs {
			attrs = append(attrs, logAttr(string(kv[0].(starlark.String)), kv[1]))
		}
		st.log().LogAttrs(ctx, level, text, attrs...)
		return starlark.None, nil
	}
}

// logAttr converts a keyword argument of log.*() into an attribute.
func logAttr(key string, v starlark.Value) slog.Attr {
	switch x := v.(type) {
	case starlark.String:
		return slog.String(key, string(x))
	case starlark.Bool:
		return slog.Bool(key, bool(x))
	case starlark.Int:
		if i, ok := x.Int64(); ok {
			return slog.Int64(key, i)
		}
		return slog.String(key, x.String())
	case starlark.Float:
		return slog.Float64(key, float64(x))
	case starlark.NoneType:
		return slog.Any(key, nil)
	}
	if g, err := toGo(v, false); err == nil {
		return slog.Any(key, g)
	}
	return slog.String(key, v.String())
}
