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
// Each call makes its own cache of re's compiled patterns.
func predeclared() starlark.StringDict {
	patterns := &reCache{}
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
		"secret":  starlark.NewBuiltin("secret", secretBuiltin),

		"http": httpModule(),
		"exec": execModule(),
		"file": fileModule(),
		"sql":  sqlModule(),

		"re":       reModule(patterns),
		"base64":   base64Module(),
		"hex":      hexModule(),
		"hash":     newHashModule(),
		"uuid":     uuidModule(),
		"url":      urlModule(),
		"template": templateModule(),
	}
	d.Freeze()
	return d
}
