//go:build !linux

package testutil

import "os/exec"

// DieWithTest does nothing here: only Linux ties a child's life to its
// parent's (PR_SET_PDEATHSIG).
func DieWithTest(cmd *exec.Cmd) {}
