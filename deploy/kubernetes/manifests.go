// Package kubernetes holds the plain manifests (`kubectl apply -f
// deploy/kubernetes`). The operator builds its clusters from these same
// files (Manifests), so both ways of installing run the same pods.
package kubernetes

import "embed"

// Manifests are the *.yaml files of this directory.
//
//go:embed *.yaml
var Manifests embed.FS
