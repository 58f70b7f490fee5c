package engine

import (
	"strings"
	"testing"

	"github.com/symphony-go/symphony/tasks"
)

func TestPlatformError(t *testing.T) {
	thread, process := spec("a", "a"), spec("b", "b")
	process.Isolation = tasks.Process
	process.File = "b.star"
	for _, tc := range []struct {
		goos string
		spec tasks.Spec
		want string
	}{
		{"linux", thread, ""},
		{"linux", process, ""},
		{"darwin", thread, ""},
		{"windows", thread, ""},
		{"darwin", process, `b.star: task b: isolation = "process" (and max_memory) needs Linux; on darwin use isolation = "thread"`},
		{"windows", process, "on windows use"},
	} {
		err := platformError(tc.goos, tc.spec)
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s, %s: %v; want %q", tc.goos, tc.spec.Isolation, err, tc.want)
		}
	}
}
