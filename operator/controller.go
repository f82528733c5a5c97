// Package operator reconciles SocketCluster resources (socketcluster.io,
// package v1alpha1) into the same Deployments, Services and
// PodDisruptionBudgets as the plain manifests, plus the ConfigMap of the
// spec's settings and, when the user brings none, the Secret of the JWT key
// and cluster token. It updates what changed in place and writes nothing
// when nothing did (each object carries the hash of what was last written).
// Before a worker scale-down it sets each worker pod's deletion cost to its
// live connection count, so the ReplicaSet removes the least-loaded ones.
// Its status reports ready pods per component, the ring (epoch, brokers,
// a migration in progress) and connections, read from the state service.
package operator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/scc-k8s/scc/operator/api/v1alpha1"
)

// deletionCost is the annotation the ReplicaSet controller reads: among
// pods alike, the lowest cost is removed first.
const deletionCost = "controller.kubernetes.io/pod-deletion-cost"

// Reconciler reconciles SocketClusters.
type Reconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder record.EventRecorder
	// Views reads a cluster's state service; nil: status without the ring.
	Views ViewReader
	// Resync is how often the status is refreshed without a change in
	// Kubernetes (the ring and connections change on their own). Default 10s.
	Resync time.Duration
}

// +kubebuilder:rbac:groups=socketcluster.io,resources=socketclusters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=socketcluster.io,resources=socketclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=socketcluster.io,resources=socketclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the reconciler: it watches SocketClusters
// (spec changes) and everything they own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.SocketCluster{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Named("socketcluster").
		Complete(r)
}

// Reconcile brings one SocketCluster's objects to its spec and reports.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	sc := &v1alpha1.SocketCluster{}
	if err := r.Get(ctx, req.NamespacedName, sc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !sc.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owned objects go by garbage collection
	}
	applyErr := r.apply(ctx, sc)
	if applyErr != nil {
		r.Recorder.Event(sc, corev1.EventTypeWarning, "ReconcileFailed", applyErr.Error())
	}
	if err := r.updateStatus(ctx, sc, applyErr); err != nil {
		return ctrl.Result{}, err
	}
	resync := r.Resync
	if resync == 0 {
		resync = 10 * time.Second
	}
	if applyErr != nil && !isSpecError(applyErr) {
		return ctrl.Result{}, applyErr // retried with backoff
	}
	return ctrl.Result{RequeueAfter: resync}, nil
}

// specError is a problem only the user can fix; retrying sooner than the
// resync does not help.
type specError struct{ error }

func isSpecError(err error) bool { var s specError; return errors.As(err, &s) }

func (r *Reconciler) apply(ctx context.Context, sc *v1alpha1.SocketCluster) error {
	if err := r.ensureSecret(ctx, sc); err != nil {
		return err
	}
	objs, err := desired(sc)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := r.applyOne(ctx, sc, o); err != nil {
			return fmt.Errorf("%s %s: %w", kindOf(o), o.GetName(), err)
		}
	}
	return nil
}

// ensureSecret creates <name>-secrets with random values when the spec
// names no Secret, once; a Secret the spec names must hold both keys.
func (r *Reconciler) ensureSecret(ctx context.Context, sc *v1alpha1.SocketCluster) error {
	s := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: secretName(sc)}, s)
	if sc.Spec.Auth.SecretName != "" {
		if apierrors.IsNotFound(err) {
			return specError{fmt.Errorf("secret %s (spec.auth.secretName) not found", sc.Spec.Auth.SecretName)}
		}
		if err != nil {
			return err
		}
		for _, k := range []string{"auth-key", "cluster-token"} {
			if len(s.Data[k]) == 0 {
				return specError{fmt.Errorf("secret %s has no %s", s.Name, k)}
			}
		}
		return nil
	}
	if err == nil || !apierrors.IsNotFound(err) {
		return err
	}
	s = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName(sc), Namespace: sc.Namespace, Labels: commonLabels(sc, "secrets")},
		Data:       map[string][]byte{"auth-key": randomHex(32), "cluster-token": randomHex(32)},
	}
	if err := controllerutil.SetControllerReference(sc, s, r.Scheme); err != nil {
		return err
	}
	if err := r.Create(ctx, s); err != nil {
		return err
	}
	r.Recorder.Eventf(sc, corev1.EventTypeNormal, "Created", "Secret %s with a new JWT key and cluster token", s.Name)
	return nil
}

func randomHex(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// applyOne creates an object, or updates it when its content hash or (for
// Deployments) its replicas differ from what is wanted. Nothing is written
// otherwise.
func (r *Reconciler) applyOne(ctx context.Context, sc *v1alpha1.SocketCluster, want client.Object) error {
	if err := controllerutil.SetControllerReference(sc, want, r.Scheme); err != nil {
		return err
	}
	have := want.DeepCopyObject().(client.Object)
	err := r.Get(ctx, client.ObjectKeyFromObject(want), have)
	if apierrors.IsNotFound(err) {
		if err := r.Create(ctx, want); err != nil {
			return err
		}
		r.Recorder.Eventf(sc, corev1.EventTypeNormal, "Created", "%s %s", kindOf(want), want.GetName())
		return nil
	}
	if err != nil {
		return err
	}
	if !metav1.IsControlledBy(have, sc) {
		return specError{fmt.Errorf("exists and is not this SocketCluster's; the operator leaves it alone")}
	}
	hash := want.GetAnnotations()[annotationHash]
	same := have.GetAnnotations()[annotationHash] == hash
	switch w := want.(type) {
	case *appsv1.Deployment:
		h := have.(*appsv1.Deployment)
		if same && equality.Semantic.DeepEqual(h.Spec.Replicas, w.Spec.Replicas) {
			return nil
		}
		if w.Name == objectName(sc, compWorker) && h.Spec.Replicas != nil && *w.Spec.Replicas < *h.Spec.Replicas {
			r.setDeletionCosts(ctx, sc)
		}
		h.Spec = w.Spec
	case *corev1.Service:
		if same {
			return nil
		}
		h := have.(*corev1.Service)
		keepAllocated(&w.Spec, &h.Spec)
		h.Spec = w.Spec
	case *corev1.ConfigMap:
		if same {
			return nil
		}
		have.(*corev1.ConfigMap).Data = w.Data
	case *policyv1.PodDisruptionBudget:
		if same {
			return nil
		}
		have.(*policyv1.PodDisruptionBudget).Spec = w.Spec
	default:
		return fmt.Errorf("operator: cannot update a %T", want)
	}
	mergeStrings(have, want)
	if err := r.Update(ctx, have); err != nil {
		return err
	}
	r.Recorder.Eventf(sc, corev1.EventTypeNormal, "Updated", "%s %s", kindOf(want), want.GetName())
	return nil
}

// keepAllocated carries what the API server allocated to a Service (its
// addresses and node ports) into the wanted spec.
func keepAllocated(want, have *corev1.ServiceSpec) {
	want.ClusterIP, want.ClusterIPs = have.ClusterIP, have.ClusterIPs
	want.IPFamilies, want.IPFamilyPolicy = have.IPFamilies, have.IPFamilyPolicy
	if want.Type == have.Type {
		want.HealthCheckNodePort = have.HealthCheckNodePort
		for i := range want.Ports {
			for _, p := range have.Ports {
				if p.Name == want.Ports[i].Name {
					want.Ports[i].NodePort = p.NodePort
				}
			}
		}
	}
}

// mergeStrings sets want's labels and annotations on have, keeping others'.
func mergeStrings(have, want client.Object) {
	l, a := have.GetLabels(), have.GetAnnotations()
	if l == nil {
		l = map[string]string{}
	}
	if a == nil {
		a = map[string]string{}
	}
	for k, v := range want.GetLabels() {
		l[k] = v
	}
	for k, v := range want.GetAnnotations() {
		a[k] = v
	}
	have.SetLabels(l)
	have.SetAnnotations(a)
}

// setDeletionCosts gives each worker pod its live connection count as its
// deletion cost, just before the worker Deployment shrinks: the
// ReplicaSet then removes the pods with the fewest clients to move. Pods
// the state service does not list (not yet serving) get no cost: the
// ReplicaSet removes unready pods first anyway.
func (r *Reconciler) setDeletionCosts(ctx context.Context, sc *v1alpha1.SocketCluster) {
	if r.Views == nil {
		return
	}
	v, err := r.Views.View(ctx, sc)
	if err != nil {
		r.Recorder.Eventf(sc, corev1.EventTypeWarning, "NoConnectionCounts",
			"worker scale-down without pod deletion costs: %v", err)
		return
	}
	byIP := map[string]uint64{}
	for _, w := range v.Workers {
		byIP[w.IP] = w.Load
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(sc.Namespace),
		client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(selectorLabels(sc, compWorker))}); err != nil {
		log.FromContext(ctx).Error(err, "listing worker pods for deletion costs")
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		load, ok := byIP[p.Status.PodIP]
		cost := ""
		if ok {
			cost = strconv.FormatUint(min(load, 1<<31-1), 10)
		}
		if p.Annotations[deletionCost] == cost {
			continue
		}
		patch := client.MergeFrom(p.DeepCopy())
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		if cost == "" {
			delete(p.Annotations, deletionCost)
		} else {
			p.Annotations[deletionCost] = cost
		}
		if err := r.Patch(ctx, p, patch); err != nil && !apierrors.IsNotFound(err) {
			log.FromContext(ctx).Error(err, "setting a pod's deletion cost", "pod", p.Name)
		}
	}
	r.Recorder.Eventf(sc, corev1.EventTypeNormal, "DeletionCosts", "worker pods' deletion costs set from their connections before a scale-down")
}

func kindOf(o client.Object) string {
	switch o.(type) {
	case *appsv1.Deployment:
		return "Deployment"
	case *corev1.Service:
		return "Service"
	case *corev1.ConfigMap:
		return "ConfigMap"
	case *corev1.Secret:
		return "Secret"
	case *policyv1.PodDisruptionBudget:
		return "PodDisruptionBudget"
	}
	return fmt.Sprintf("%T", o)
}
