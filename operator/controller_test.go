package operator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/scc-k8s/scc/operator"
	"github.com/scc-k8s/scc/operator/api/v1alpha1"

	"github.com/scc-k8s/scc/internal/testutil"
)

var ctx = context.Background()

func create(t *testing.T, ns string, spec v1alpha1.SocketClusterSpec) *v1alpha1.SocketCluster {
	t.Helper()
	sc := &v1alpha1.SocketCluster{ObjectMeta: metav1.ObjectMeta{Name: "chat", Namespace: ns}, Spec: spec}
	if err := k8s.Create(ctx, sc); err != nil {
		t.Fatal(err)
	}
	return sc
}

func deployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	testutil.EventuallyNil(t, 10*time.Second, "deployment "+name, func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d)
	})
	return d
}

func get(t *testing.T, ns, name string, o client.Object) error {
	t.Helper()
	return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, o)
}

// mustGet reads an object the test needs, failing the test if it cannot:
// a resourceVersion compared with an object never read would be "" both
// times.
func mustGet(t *testing.T, ns, name string, o client.Object) {
	t.Helper()
	if err := get(t, ns, name, o); err != nil {
		t.Fatalf("get %s/%s: %v", ns, name, err)
	}
}

// Creating a SocketCluster creates the plain manifests' objects, renamed,
// owned by it, with its secrets and settings.
func TestCreate(t *testing.T) {
	ns := namespace(t)
	sc := create(t, ns, v1alpha1.SocketClusterSpec{Protocol: v1alpha1.ProtocolSpec{Version: 1, Path: "/ws/"}})
	for _, comp := range []string{"state", "broker", "worker", "gateway"} {
		d := deployment(t, ns, "chat-"+comp)
		if !metav1.IsControlledBy(d, sc) {
			t.Errorf("%s: not controlled by the SocketCluster: %v", d.Name, d.OwnerReferences)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.Image != "scc:dev" || d.Spec.Template.Labels["app.kubernetes.io/instance"] != "chat" ||
			d.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] != "chat" {
			t.Errorf("%s: image %q, labels %v, selector %v", d.Name, c.Image, d.Spec.Template.Labels, d.Spec.Selector)
		}
		for _, a := range c.Args {
			if strings.Contains(a, "scc-state") {
				t.Errorf("%s still points at the plain manifests' state: %v", d.Name, c.Args)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != "chat-secrets" {
				t.Errorf("%s: secret %s", d.Name, e.ValueFrom.SecretKeyRef.Name)
			}
		}
	}
	if w := deployment(t, ns, "chat-worker"); *w.Spec.Replicas != 3 || !slicesContain(w.Spec.Template.Spec.Containers[0].Args, "chat-state:9000") {
		t.Errorf("worker: replicas %d, args %v", *w.Spec.Replicas, w.Spec.Template.Spec.Containers[0].Args)
	}
	if b := deployment(t, ns, "chat-broker"); *b.Spec.Replicas != 2 {
		t.Errorf("broker replicas %d, want the default 2", *b.Spec.Replicas)
	}
	for _, name := range []string{"chat-state", "chat-worker", "chat-gateway"} {
		if err := get(t, ns, name, &corev1.Service{}); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	}
	for _, name := range []string{"chat-broker", "chat-worker", "chat-gateway"} {
		if err := get(t, ns, name, &policyv1.PodDisruptionBudget{}); err != nil {
			t.Errorf("pdb %s: %v", name, err)
		}
	}
	sec := &corev1.Secret{}
	testutil.EventuallyNil(t, 5*time.Second, "secret", func() error { return get(t, ns, "chat-secrets", sec) })
	if len(sec.Data["auth-key"]) < 32 || len(sec.Data["cluster-token"]) < 32 {
		t.Errorf("secret keys: %v", sec.Data)
	}
	cm := &corev1.ConfigMap{}
	testutil.EventuallyNil(t, 5*time.Second, "configmap", func() error { return get(t, ns, "chat-config", cm) })
	if cm.Data["SCC_PROTOCOL_VERSION"] != "1" || cm.Data["SCC_PATH"] != "/ws/" {
		t.Errorf("config: %v", cm.Data)
	}
	// No pods run here, so the cluster is not available, and says why.
	testutil.EventuallyNil(t, 10*time.Second, "status", func() error {
		cur := &v1alpha1.SocketCluster{}
		if err := get(t, ns, "chat", cur); err != nil {
			return err
		}
		a := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionAvailable)
		if cur.Status.ObservedGeneration != cur.Generation || a == nil || a.Status != metav1.ConditionFalse ||
			!strings.Contains(a.Message, "state") || cur.Status.WorkerSelector == "" {
			return fmt.Errorf("status %+v", cur.Status)
		}
		return nil
	})
}

// Status: ready pods per component from the Deployments, the ring and
// connections from the state service, and the conditions.
func TestStatusAndConditions(t *testing.T) {
	ns := namespace(t)
	create(t, ns, v1alpha1.SocketClusterSpec{})
	views.set(ns, &operator.View{Epoch: 7, Phase: "subscribe_both", Brokers: []string{"b1", "b2"},
		Workers: []operator.WorkerLoad{{ID: "w1", IP: "10.0.0.1", Load: 40}, {ID: "w2", IP: "10.0.0.2", Load: 2}}})
	for comp, n := range map[string]int32{"state": 1, "broker": 2, "worker": 3, "gateway": 2} {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			d := deployment(t, ns, "chat-"+comp)
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, ReadyReplicas: n,
				UpdatedReplicas: n, AvailableReplicas: n}
			return k8s.Status().Update(ctx, d)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var cur v1alpha1.SocketCluster
	testutil.EventuallyNil(t, 10*time.Second, "available, migrating", func() error {
		if err := get(t, ns, "chat", &cur); err != nil {
			return err
		}
		s := cur.Status
		if !meta.IsStatusConditionTrue(s.Conditions, v1alpha1.ConditionAvailable) ||
			!meta.IsStatusConditionTrue(s.Conditions, v1alpha1.ConditionProgressing) ||
			!meta.IsStatusConditionFalse(s.Conditions, v1alpha1.ConditionDegraded) ||
			s.Workers.ReadyReplicas != 3 || s.Brokers.ReadyReplicas != 2 || s.RingEpoch != 7 ||
			s.Connections != 42 || s.Migration != "subscribe_both" || len(s.RingBrokers) != 2 {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})
	if p := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionProgressing); p.Reason != "RingMigrating" {
		t.Errorf("progressing: %+v", p)
	}
	views.set(ns, &operator.View{Epoch: 8, Brokers: []string{"b1", "b2"}})
	testutil.EventuallyNil(t, 10*time.Second, "settled", func() error {
		if err := get(t, ns, "chat", &cur); err != nil {
			return err
		}
		if !meta.IsStatusConditionFalse(cur.Status.Conditions, v1alpha1.ConditionProgressing) || cur.Status.RingEpoch != 8 {
			return fmt.Errorf("status %+v", cur.Status)
		}
		return nil
	})
}

// A Secret the spec names must exist with both keys; until it does the
// cluster is Degraded, with an event, and nothing else is created.
func TestBringYourOwnSecret(t *testing.T) {
	ns := namespace(t)
	create(t, ns, v1alpha1.SocketClusterSpec{Auth: v1alpha1.AuthSpec{SecretName: "mine"}})
	var cur v1alpha1.SocketCluster
	testutil.EventuallyNil(t, 10*time.Second, "degraded", func() error {
		if err := get(t, ns, "chat", &cur); err != nil {
			return err
		}
		d := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionDegraded)
		if d == nil || d.Status != metav1.ConditionTrue || !strings.Contains(d.Message, "mine") {
			return fmt.Errorf("conditions %+v", cur.Status.Conditions)
		}
		return nil
	})
	if err := get(t, ns, "chat-worker", &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("worker created without its secret: %v", err)
	}
	evs := &corev1.EventList{}
	_ = k8s.List(ctx, evs, client.InNamespace(ns))
	if !hasEvent(evs, "ReconcileFailed", "mine") {
		t.Errorf("no ReconcileFailed event: %+v", evs.Items)
	}
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: ns},
		Data: map[string][]byte{"auth-key": []byte("k"), "cluster-token": []byte("t")}}); err != nil {
		t.Fatal(err)
	}
	d := deployment(t, ns, "chat-worker")
	if ref := d.Spec.Template.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef; ref == nil || ref.Name != "mine" {
		t.Errorf("worker's secret: %+v", d.Spec.Template.Spec.Containers[0].Env)
	}
	if err := get(t, ns, "chat-secrets", &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("the operator made its own secret too: %v", err)
	}
}

// Changing the spec updates the objects in place (same UIDs); settings
// reach the pods through the ConfigMap and a rollout of its hash.
func TestUpdateInPlace(t *testing.T) {
	ns := namespace(t)
	sc := create(t, ns, v1alpha1.SocketClusterSpec{})
	w := deployment(t, ns, "chat-worker")
	uid, cfgHash := w.UID, w.Spec.Template.Annotations["socketcluster.io/config-hash"]
	patch := client.MergeFrom(sc.DeepCopy())
	sc.Spec.Image = "scc:v2"
	sc.Spec.Protocol.PingInterval = &metav1.Duration{Duration: 5 * time.Second}
	sc.Spec.Workers.DrainRate = ptr.To[int32](250)
	sc.Spec.Gateways.ServiceType = corev1.ServiceTypeClusterIP
	if err := k8s.Patch(ctx, sc, patch); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyNil(t, 10*time.Second, "worker updated", func() error {
		if err := get(t, ns, "chat-worker", w); err != nil {
			return err
		}
		c := w.Spec.Template.Spec.Containers[0]
		if c.Image != "scc:v2" || w.Spec.Template.Annotations["socketcluster.io/config-hash"] == cfgHash ||
			!slicesContain(c.Args, "250") {
			return fmt.Errorf("image %s, annotations %v, args %v", c.Image, w.Spec.Template.Annotations, c.Args)
		}
		return nil
	})
	if w.UID != uid {
		t.Errorf("worker Deployment replaced, not updated")
	}
	cm := &corev1.ConfigMap{}
	if err := get(t, ns, "chat-config", cm); err != nil || cm.Data["SCC_PING_INTERVAL"] != "5s" {
		t.Errorf("config %v %v", cm.Data, err)
	}
	svc := &corev1.Service{}
	testutil.EventuallyNil(t, 10*time.Second, "gateway service type", func() error {
		if err := get(t, ns, "chat-gateway", svc); err != nil {
			return err
		}
		if svc.Spec.Type != corev1.ServiceTypeClusterIP {
			return fmt.Errorf("type %s", svc.Spec.Type)
		}
		return nil
	})
}

// Workers scale through the resource and through its scale subresource
// (`kubectl scale socketcluster/<name>`).
func TestScale(t *testing.T) {
	ns := namespace(t)
	sc := create(t, ns, v1alpha1.SocketClusterSpec{})
	deployment(t, ns, "chat-worker")
	wantWorkers := func(n int32) {
		t.Helper()
		testutil.EventuallyNil(t, 10*time.Second, fmt.Sprintf("%d workers", n), func() error {
			d := &appsv1.Deployment{}
			if err := get(t, ns, "chat-worker", d); err != nil {
				return err
			}
			if *d.Spec.Replicas != n {
				return fmt.Errorf("%d replicas", *d.Spec.Replicas)
			}
			return nil
		})
	}
	patch := client.MergeFrom(sc.DeepCopy())
	sc.Spec.Workers.Replicas = ptr.To[int32](5)
	sc.Spec.Brokers.Replicas = ptr.To[int32](4)
	if err := k8s.Patch(ctx, sc, patch); err != nil {
		t.Fatal(err)
	}
	wantWorkers(5)
	if b := deployment(t, ns, "chat-broker"); *b.Spec.Replicas != 4 {
		testutil.EventuallyNil(t, 10*time.Second, "4 brokers", func() error {
			if b = deployment(t, ns, "chat-broker"); *b.Spec.Replicas != 4 {
				return fmt.Errorf("%d", *b.Spec.Replicas)
			}
			return nil
		})
	}
	// As kubectl scale does it: read the scale, write it back (again when
	// the operator's status write came in between).
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale := &autoscalingv1.Scale{}
		if err := k8s.SubResource("scale").Get(ctx, sc, scale); err != nil {
			return err
		}
		if scale.Spec.Replicas != 5 || scale.Status.Selector == "" {
			t.Errorf("scale subresource reads %d replicas, selector %q", scale.Spec.Replicas, scale.Status.Selector)
		}
		scale.Spec.Replicas = 2
		return k8s.SubResource("scale").Update(ctx, sc, client.WithSubResourceBody(scale))
	})
	if err != nil {
		t.Fatal(err)
	}
	wantWorkers(2)
	// A Deployment scaled behind the operator's back is put back.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := deployment(t, ns, "chat-worker")
		d.Spec.Replicas = ptr.To[int32](9)
		return k8s.Update(ctx, d)
	})
	if err != nil {
		t.Fatal(err)
	}
	wantWorkers(2)
}

// Before workers are removed, each worker pod's deletion cost is its
// connection count from the state service.
func TestDeletionCostBeforeScaleDown(t *testing.T) {
	ns := namespace(t)
	sc := create(t, ns, v1alpha1.SocketClusterSpec{})
	deployment(t, ns, "chat-worker")
	loads := map[string]uint64{"w-busy": 300, "w-idle": 3, "w-mid": 40}
	var view operator.View
	i := 0
	for name, load := range loads {
		i++
		ip := fmt.Sprintf("10.1.0.%d", i)
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{"app.kubernetes.io/name": "scc-worker", "app.kubernetes.io/instance": "chat"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "scc", Image: "scc:dev"}}}}
		if err := k8s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		p.Status.PodIP = ip
		if err := k8s.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		view.Workers = append(view.Workers, operator.WorkerLoad{ID: name + "-x", IP: ip, Load: load})
	}
	views.set(ns, &view)
	patch := client.MergeFrom(sc.DeepCopy())
	sc.Spec.Workers.Replicas = ptr.To[int32](2)
	if err := k8s.Patch(ctx, sc, patch); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyNil(t, 10*time.Second, "deletion costs", func() error {
		for name, load := range loads {
			p := &corev1.Pod{}
			if err := get(t, ns, name, p); err != nil {
				return err
			}
			if got := p.Annotations["controller.kubernetes.io/pod-deletion-cost"]; got != fmt.Sprint(load) {
				return fmt.Errorf("%s: cost %q, want %d", name, got, load)
			}
		}
		return nil
	})
	if d := deployment(t, ns, "chat-worker"); *d.Spec.Replicas != 2 {
		testutil.EventuallyNil(t, 10*time.Second, "2 workers", func() error {
			if d = deployment(t, ns, "chat-worker"); *d.Spec.Replicas != 2 {
				return fmt.Errorf("%d", *d.Spec.Replicas)
			}
			return nil
		})
	}
}

// Once everything matches, reconciling again writes nothing: no update,
// no status write, no event.
func TestNoWriteWhenNothingChanged(t *testing.T) {
	ns := namespace(t)
	create(t, ns, v1alpha1.SocketClusterSpec{})
	views.set(ns, &operator.View{Epoch: 1, Brokers: []string{"b"}})
	deployment(t, ns, "chat-gateway")
	// Settled: the write count stops moving.
	var n int
	testutil.EventuallyNil(t, 15*time.Second, "writes settle", func() error {
		before, _ := writes.in(ns)
		time.Sleep(1500 * time.Millisecond) // three resyncs
		after, _ := writes.in(ns)
		n = after
		if after != before {
			return fmt.Errorf("%d writes in 1.5 s", after-before)
		}
		return nil
	})
	rv := map[string]string{}
	for _, name := range []string{"chat-state", "chat-broker", "chat-worker", "chat-gateway"} {
		d := &appsv1.Deployment{}
		mustGet(t, ns, name, d)
		rv[name] = d.ResourceVersion
	}
	sc := &v1alpha1.SocketCluster{}
	mustGet(t, ns, "chat", sc)
	time.Sleep(3 * time.Second) // six resyncs, each a full reconcile
	after, by := writes.in(ns)
	if after != n {
		t.Errorf("%d writes while nothing changed: %v", after-n, by)
	}
	for name, v := range rv {
		d := &appsv1.Deployment{}
		mustGet(t, ns, name, d)
		if d.ResourceVersion != v {
			t.Errorf("%s rewritten: resourceVersion %s -> %s", name, v, d.ResourceVersion)
		}
	}
	cur := &v1alpha1.SocketCluster{}
	mustGet(t, ns, "chat", cur)
	if cur.ResourceVersion != sc.ResourceVersion {
		t.Errorf("status rewritten: resourceVersion %s -> %s", sc.ResourceVersion, cur.ResourceVersion)
	}
}

// The CRD's validation refuses broken specs before the operator sees them.
func TestValidationRejectsBrokenSpecs(t *testing.T) {
	ns := namespace(t)
	for name, spec := range map[string]v1alpha1.SocketClusterSpec{
		"no-brokers":   {Brokers: v1alpha1.BrokerSpec{Replicas: ptr.To[int32](0)}},
		"neg-workers":  {Workers: v1alpha1.WorkerSpec{Replicas: ptr.To[int32](-1)}},
		"bad-svc-type": {Gateways: v1alpha1.GatewaySpec{ServiceType: "Internet"}},
		"bad-protocol": {Protocol: v1alpha1.ProtocolSpec{Version: 3}},
		"bad-path":     {Protocol: v1alpha1.ProtocolSpec{Path: "ws"}},
		"bad-alg":      {Auth: v1alpha1.AuthSpec{Algorithm: "none"}},
		"zero-drain":   {Workers: v1alpha1.WorkerSpec{DrainRate: ptr.To[int32](0)}},
		"bad-pull":     {ImagePullPolicy: "Sometimes"},
	} {
		sc := &v1alpha1.SocketCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
		err := k8s.Create(ctx, sc)
		if !apierrors.IsInvalid(err) {
			t.Errorf("%s: created or failed otherwise: %v", name, err)
		}
	}
	// Defaults fill an empty spec.
	sc := &v1alpha1.SocketCluster{ObjectMeta: metav1.ObjectMeta{Name: "empty", Namespace: ns}}
	if err := k8s.Create(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if sc.Spec.Image != "scc:dev" || sc.Spec.Workers.Replicas == nil || *sc.Spec.Workers.Replicas != 3 ||
		sc.Spec.Brokers.Replicas == nil || *sc.Spec.Brokers.Replicas != 2 || sc.Spec.Gateways.ServiceType != corev1.ServiceTypeLoadBalancer {
		t.Errorf("defaults: %+v", sc.Spec)
	}
}

// Deleting a SocketCluster deletes what it owns (the garbage collector of
// a real kube-controller-manager does it, through the owner references).
func TestDeleteCollectsGarbage(t *testing.T) {
	if !hasGC {
		t.Skip("no kube-controller-manager in KUBEBUILDER_ASSETS (scripts/envtest.sh puts one there)")
	}
	ns := namespace(t)
	sc := create(t, ns, v1alpha1.SocketClusterSpec{})
	deployment(t, ns, "chat-gateway")
	testutil.EventuallyNil(t, 5*time.Second, "secret", func() error { return get(t, ns, "chat-secrets", &corev1.Secret{}) })
	if err := k8s.Delete(ctx, sc, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyNil(t, 30*time.Second, "owned objects deleted", func() error {
		var left []string
		for _, l := range []client.ObjectList{&appsv1.DeploymentList{}, &corev1.ServiceList{}, &corev1.ConfigMapList{},
			&policyv1.PodDisruptionBudgetList{}} {
			if err := k8s.List(ctx, l, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/instance": "chat"}); err != nil {
				return err
			}
			left = append(left, objectsOf(l)...)
		}
		if err := get(t, ns, "chat-secrets", &corev1.Secret{}); err == nil {
			left = append(left, "secret chat-secrets")
		}
		if len(left) > 0 {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
}

func objectsOf(l client.ObjectList) []string {
	var out []string
	_ = meta.EachListItem(l, func(o runtime.Object) error {
		out = append(out, o.(client.Object).GetName())
		return nil
	})
	return out
}

func hasEvent(evs *corev1.EventList, reason, text string) bool {
	for _, e := range evs.Items {
		if e.Reason == reason && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
