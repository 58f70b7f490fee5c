package starlarklib

import (
	"go.starlark.net/lib/json"
	"go.starlark.net/lib/math"
	"go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// predeclared returns the names every symphony file sees besides
// Starlark's universe (fail, print, len, ...), frozen. doc.go lists them.
func predeclared() starlark.StringDict {
	d := starlark.StringDict{
		"task":    starlark.NewBuiltin("task", taskBuiltin),
		"config":  starlark.NewBuiltin("config", configBuiltin),
		"json":    json.Module,
		"time":    time.Module,
		"math":    math.Module,
		"struct":  starlark.NewBuiltin("struct", starlarkstruct.Make),
		"log":     logModule(),
		"publish": starlark.NewBuiltin("publish", publishBuiltin),
		"retry":   starlark.NewBuiltin("retry", retryBuiltin),
		"sleep":   starlark.NewBuiltin("sleep", sleepBuiltin),
		"env":     starlark.NewBuiltin("env", envBuiltin),
		"scaler":  starlark.NewBuiltin("scaler", scalerBuiltin),
	}
	d.Freeze()
	return d
}
