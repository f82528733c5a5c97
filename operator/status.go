package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/scc-k8s/scc/operator/api/v1alpha1"
)

// View is what the operator needs of a cluster's state service.
type View struct {
	Epoch     int64
	Phase     string // "" when stable
	Brokers   []string
	Workers   []WorkerLoad
	Reachable bool
}

// WorkerLoad is one worker as state knows it.
type WorkerLoad struct {
	ID   string
	IP   string
	Load uint64
}

// ViewReader reads a SocketCluster's cluster view.
type ViewReader interface {
	View(ctx context.Context, sc *v1alpha1.SocketCluster) (*View, error)
}

// StateHTTP reads the view from the state service's GET /cluster, at its
// Service's cluster address (the operator runs in the cluster).
type StateHTTP struct {
	Client client.Client
	HTTP   *http.Client
}

// View implements ViewReader.
func (s StateHTTP) View(ctx context.Context, sc *v1alpha1.SocketCluster) (*View, error) {
	svc := &corev1.Service{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: objectName(sc, compState)}, svc); err != nil {
		return nil, err
	}
	port := int32(9001)
	for _, p := range svc.Spec.Ports {
		if p.Name == "http" {
			port = p.Port
		}
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil, fmt.Errorf("service %s has no cluster address", svc.Name)
	}
	hc := s.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 3 * time.Second}
	}
	url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(port))) + "/cluster"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return decodeView(resp)
}

// decodeView reads state's JSON cluster view (ClusterView in protojson:
// 64-bit numbers as strings).
func decodeView(resp *http.Response) (*View, error) {
	type member struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		Load    string `json:"load"`
	}
	var raw struct {
		Epoch   string   `json:"epoch"`
		Phase   string   `json:"phase"`
		Brokers []member `json:"brokers"`
		Workers []member `json:"workers"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 8<<20)).Decode(&raw); err != nil {
		return nil, fmt.Errorf("state's /cluster: %w", err)
	}
	v := &View{Reachable: true}
	v.Epoch, _ = strconv.ParseInt(raw.Epoch, 10, 64)
	if raw.Phase != "" && raw.Phase != "PHASE_STABLE" {
		v.Phase = strings.ToLower(strings.TrimPrefix(raw.Phase, "PHASE_"))
	}
	for _, b := range raw.Brokers {
		v.Brokers = append(v.Brokers, b.ID)
	}
	for _, w := range raw.Workers {
		load, _ := strconv.ParseUint(w.Load, 10, 64)
		host, _, err := net.SplitHostPort(w.Address)
		if err != nil {
			host = w.Address
		}
		v.Workers = append(v.Workers, WorkerLoad{ID: w.ID, IP: host, Load: load})
	}
	return v, nil
}

// updateStatus writes the status when it differs from what is stored.
func (r *Reconciler) updateStatus(ctx context.Context, sc *v1alpha1.SocketCluster, applyErr error) error {
	st := sc.Status.DeepCopy()
	st.ObservedGeneration = sc.Generation
	st.WorkerSelector = labels.SelectorFromSet(selectorLabels(sc, compWorker)).String()
	var notReady, rolling []string
	for _, c := range []struct {
		comp string
		out  *v1alpha1.ComponentStatus
		need int32 // ready pods it needs to be available
	}{
		{compState, &st.State, 1},
		{compBroker, &st.Brokers, 1},
		{compWorker, &st.Workers, min(1, deref(sc.Spec.Workers.Replicas, 3))},
		{compGateway, &st.Gateways, min(1, deref(sc.Spec.Gateways.Replicas, 2))},
	} {
		d := &appsv1.Deployment{}
		err := r.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: objectName(sc, c.comp)}, d)
		if err != nil {
			*c.out = v1alpha1.ComponentStatus{}
			notReady = append(notReady, c.comp)
			continue
		}
		*c.out = v1alpha1.ComponentStatus{Replicas: d.Status.Replicas, ReadyReplicas: d.Status.ReadyReplicas}
		if d.Status.ReadyReplicas < c.need {
			notReady = append(notReady, c.comp)
		}
		want := deref(d.Spec.Replicas, 1)
		if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < want ||
			d.Status.ReadyReplicas != want || d.Status.Replicas != want {
			rolling = append(rolling, c.comp)
		}
	}
	if r.Views != nil && st.State.ReadyReplicas > 0 {
		if v, err := r.Views.View(ctx, sc); err == nil {
			st.RingEpoch, st.RingBrokers, st.Migration = v.Epoch, v.Brokers, v.Phase
			st.Connections = 0
			for _, w := range v.Workers {
				st.Connections += int64(w.Load)
			}
		}
	}

	cond := func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason,
			Message: msg, ObservedGeneration: sc.Generation})
	}
	if len(notReady) == 0 && (r.Views == nil || len(st.RingBrokers) > 0) {
		cond(v1alpha1.ConditionAvailable, true, "Serving", "every component has ready pods")
	} else if len(notReady) > 0 {
		cond(v1alpha1.ConditionAvailable, false, "ComponentsNotReady", "no ready pods: "+strings.Join(notReady, ", "))
	} else {
		cond(v1alpha1.ConditionAvailable, false, "NoRing", "the state service has no broker in its ring")
	}
	switch {
	case len(rolling) > 0:
		cond(v1alpha1.ConditionProgressing, true, "RollingOut", "pods changing: "+strings.Join(rolling, ", "))
	case st.Migration != "":
		cond(v1alpha1.ConditionProgressing, true, "RingMigrating", "channels moving between brokers: "+st.Migration)
	default:
		cond(v1alpha1.ConditionProgressing, false, "Settled", "every pod is up to date and ready")
	}
	if applyErr != nil {
		cond(v1alpha1.ConditionDegraded, true, "ReconcileFailed", applyErr.Error())
	} else {
		cond(v1alpha1.ConditionDegraded, false, "AsExpected", "the cluster's objects match the spec")
	}
	if equality.Semantic.DeepEqual(&sc.Status, st) {
		return nil
	}
	sc.Status = *st
	return r.Status().Update(ctx, sc)
}

func deref(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}
