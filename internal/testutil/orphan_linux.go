package testutil

import (
	"os/exec"
	"syscall"
)

// DieWithTest makes the process cmd starts get SIGKILL when the test
// process dies: a test binary killed by its -timeout runs no Cleanup,
// and would otherwise leave its servers running.
func DieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
