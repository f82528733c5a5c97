package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SocketClusterSpec is the cluster a user asks for. Every field has a
// default; an empty spec is the plain manifests' cluster.
type SocketClusterSpec struct {
	// Image of every component (the scc image).
	// +kubebuilder:default="scc:dev"
	// +kubebuilder:validation:MinLength=1
	// +optional
	Image string `json:"image,omitempty"`
	// ImagePullPolicy of every component.
	// +kubebuilder:default=IfNotPresent
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// State is the membership service: one replica, always.
	// +optional
	State StateSpec `json:"state,omitempty"`
	// Brokers route channels; scaling them moves channels with nothing lost.
	// +kubebuilder:default={}
	// +optional
	Brokers BrokerSpec `json:"brokers,omitempty"`
	// Workers serve the clients; a removed worker drains its clients to
	// the others at Workers.DrainRate.
	// +kubebuilder:default={}
	// +optional
	Workers WorkerSpec `json:"workers,omitempty"`
	// Gateways are the address clients are given.
	// +kubebuilder:default={}
	// +optional
	Gateways GatewaySpec `json:"gateways,omitempty"`

	// Protocol settings of the workers.
	// +optional
	Protocol ProtocolSpec `json:"protocol,omitempty"`
	// Auth: the JWT key and the cluster token.
	// +optional
	Auth AuthSpec `json:"auth,omitempty"`
}

// StateSpec configures the state service.
type StateSpec struct {
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

// BrokerSpec configures the brokers.
type BrokerSpec struct {
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

// WorkerSpec configures the workers.
type WorkerSpec struct {
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// DrainRate is how many sockets per second a stopping worker closes
	// (clients reconnect at once to the others).
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +optional
	DrainRate *int32 `json:"drainRate,omitempty"`
	// DrainTimeout bounds a worker's drain; the pods' grace period is
	// this and ten seconds.
	// +kubebuilder:default="30s"
	// +optional
	DrainTimeout *metav1.Duration `json:"drainTimeout,omitempty"`
}

// GatewaySpec configures the gateways.
type GatewaySpec struct {
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// ServiceType of the gateways' Service.
	// +kubebuilder:default=LoadBalancer
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +optional
	ServiceType corev1.ServiceType `json:"serviceType,omitempty"`
	// TLSSecretName names a kubernetes.io/tls Secret; the gateways then
	// serve https:// and wss:// with it (reloaded when it changes).
	// +optional
	TLSSecretName string `json:"tlsSecretName,omitempty"`
}

// ProtocolSpec carries the workers' protocol options.
type ProtocolSpec struct {
	// Version 1 serves socketcluster-client 14 and older, 2 the newer.
	// +kubebuilder:validation:Enum=1;2
	// +optional
	Version int32 `json:"version,omitempty"`
	// Path of the WebSocket endpoint.
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	Path string `json:"path,omitempty"`
	// PingInterval between the server's pings.
	// +optional
	PingInterval *metav1.Duration `json:"pingInterval,omitempty"`
	// MaxPayload is the largest inbound message in bytes.
	// +kubebuilder:validation:Minimum=1024
	// +optional
	MaxPayload *int64 `json:"maxPayload,omitempty"`
	// Origins allowed, host:port patterns separated by commas.
	// +optional
	Origins string `json:"origins,omitempty"`
	// AllowClientPublish lets clients publish (default true).
	// +optional
	AllowClientPublish *bool `json:"allowClientPublish,omitempty"`
	// PerMessageDeflate accepts compression when clients offer it.
	// +optional
	PerMessageDeflate bool `json:"perMessageDeflate,omitempty"`
}

// AuthSpec says where the secrets come from.
type AuthSpec struct {
	// SecretName names a Secret of your own with the keys auth-key (the
	// JWT HMAC key) and cluster-token. Empty: the operator creates
	// <name>-secrets with random values once and never changes them.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// Algorithm of the JWTs.
	// +kubebuilder:validation:Enum=HS256;HS384;HS512
	// +optional
	Algorithm string `json:"algorithm,omitempty"`
	// DefaultExpiry of tokens issued without an exp claim.
	// +optional
	DefaultExpiry *metav1.Duration `json:"defaultExpiry,omitempty"`
}

// ComponentStatus counts one component's pods.
type ComponentStatus struct {
	// Replicas the component's Deployment has (all of its pods).
	Replicas int32 `json:"replicas"`
	// ReadyReplicas passing their readiness probe.
	ReadyReplicas int32 `json:"readyReplicas"`
}

// SocketClusterStatus is what the operator last saw.
type SocketClusterStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	State ComponentStatus `json:"state,omitempty"`
	// +optional
	Brokers ComponentStatus `json:"brokers,omitempty"`
	// +optional
	Workers ComponentStatus `json:"workers,omitempty"`
	// +optional
	Gateways ComponentStatus `json:"gateways,omitempty"`
	// WorkerSelector selects the worker pods (the scale subresource's).
	// +optional
	WorkerSelector string `json:"workerSelector,omitempty"`
	// RingEpoch numbers the broker set; it grows on each change.
	// +optional
	RingEpoch int64 `json:"ringEpoch,omitempty"`
	// RingBrokers are the brokers of the current ring.
	// +optional
	RingBrokers []string `json:"ringBrokers,omitempty"`
	// Migration is the phase of a ring change in progress; empty when
	// the ring is stable.
	// +optional
	Migration string `json:"migration,omitempty"`
	// Connections open on all workers.
	// +optional
	Connections int64 `json:"connections,omitempty"`
	// Conditions: Available (every component has its ready pods and the
	// ring has a broker), Progressing (a rollout or a ring change is under
	// way), Degraded (the operator cannot do what the spec asks).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types.
const (
	ConditionAvailable   = "Available"
	ConditionProgressing = "Progressing"
	ConditionDegraded    = "Degraded"
)

// SocketCluster is a whole SocketCluster installation.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=sc,categories=all
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.workers.replicas,statuspath=.status.workers.replicas,selectorpath=.status.workerSelector
// +kubebuilder:printcolumn:name="Workers",type=string,JSONPath=`.status.workers.readyReplicas`
// +kubebuilder:printcolumn:name="Brokers",type=string,JSONPath=`.status.brokers.readyReplicas`
// +kubebuilder:printcolumn:name="Gateways",type=string,JSONPath=`.status.gateways.readyReplicas`
// +kubebuilder:printcolumn:name="Connections",type=integer,JSONPath=`.status.connections`
// +kubebuilder:printcolumn:name="Epoch",type=integer,JSONPath=`.status.ringEpoch`
// +kubebuilder:printcolumn:name="Available",type=string,JSONPath=`.status.conditions[?(@.type=="Available")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SocketCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SocketClusterSpec   `json:"spec,omitempty"`
	Status SocketClusterStatus `json:"status,omitempty"`
}

// SocketClusterList is a list of SocketClusters.
//
// +kubebuilder:object:root=true
type SocketClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SocketCluster `json:"items"`
}
