// Package v1alpha1 is the SocketCluster API (socketcluster.io/v1alpha1): one
// resource describes a whole cluster (state, brokers, workers, gateways)
// and reports its health, its ring and its connections. The operator
// (package operator, `scc operator`) reconciles it.
//
// +kubebuilder:object:generate=true
// +groupName=socketcluster.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

// GroupVersion is the API's group and version.
var GroupVersion = schema.GroupVersion{Group: "socketcluster.io", Version: "v1alpha1"}

var (
	// SchemeBuilder registers the API's types.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	// AddToScheme adds them to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func init() { SchemeBuilder.Register(&SocketCluster{}, &SocketClusterList{}) }
