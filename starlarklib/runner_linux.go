package starlarklib

import "syscall"

// dieWithParent has the kernel kill the program if the daemon dies
// without stopping it.
func dieWithParent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
