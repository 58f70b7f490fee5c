package engine

import (
	"fmt"
	"runtime"

	"github.com/symphony-go/symphony/tasks"
)

// CheckPlatform refuses a task this platform cannot run: worker processes
// (isolation = "process", and with them max_memory) rely on Linux's
// parent-death signal and /proc, so elsewhere only thread isolation runs.
// run and check both ask, so that a task author on macOS learns it when
// the files load.
func CheckPlatform(spec tasks.Spec) error { return platformError(runtime.GOOS, spec) }

func platformError(goos string, spec tasks.Spec) error {
	if goos == "linux" || spec.Isolation != tasks.Process {
		return nil
	}
	return fmt.Errorf("%s: task %s: isolation = \"process\" (and max_memory) needs Linux; on %s use isolation = \"thread\"",
		spec.File, spec.Name, goos)
}
