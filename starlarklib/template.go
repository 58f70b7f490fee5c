package starlarklib

import (
	"fmt"
	"strings"
	"text/template"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// maxTemplateOutput bounds what template.render writes.
const maxTemplateOutput = 10 << 20

// templateModule is template: render(text, data = {}) executes text as a
// Go text/template with data (a dict: {{.name}}, {{range .items}}...{{end}},
// {{if .x}}...{{end}}). A key the template names but data lacks is an
// error, not an empty string; a secret renders as <secret NAME>.
func templateModule() *starlarkstruct.Module {
	return newModule("template", map[string]builtinFunc{
		"render": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var (
				text string
				data starlark.Value = starlark.NewDict(0)
			)
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text", &text, "data?", &data); err != nil {
				return nil, err
			}
			t, err := template.New("template").Option("missingkey=error").Parse(text)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", b.Name(), err)
			}
			g, err := toGo(data, true)
			if err != nil {
				return nil, fmt.Errorf("%s: data: %v", b.Name(), err)
			}
			var out limitedBuilder
			out.max = maxTemplateOutput
			if err := t.Execute(&out, g); err != nil {
				return nil, fmt.Errorf("%s: %v", b.Name(), err)
			}
			return starlark.String(out.String()), nil
		},
	})
}

// limitedBuilder is a strings.Builder that refuses to grow past max.
type limitedBuilder struct {
	strings.Builder
	max int
}

func (b *limitedBuilder) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, fmt.Errorf("output is larger than %d bytes", b.max)
	}
	return b.Builder.Write(p)
}
