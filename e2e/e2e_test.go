//go:build e2e

package e2e

import "testing"

// TestE2E runs the suite's parts in order on one cluster.
func TestE2E(t *testing.T) {
	t.Run("Manifests", testManifests)
	t.Run("Operator", testOperator)
	t.Run("TrafficStayedOnNode", testTrafficStayed)
}
