package operator

import (
	"context"
	"log/slog"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/scc-k8s/scc/operator/api/v1alpha1"
)

// Options configure Run.
type Options struct {
	// Config reaches the API server; nil: in-cluster or $KUBECONFIG.
	Config *rest.Config
	// MetricsAddr serves /metrics ("0" disables). HealthAddr serves
	// /healthz and /readyz.
	MetricsAddr, HealthAddr string
	// LeaderElect lets several replicas run, one active.
	LeaderElect bool
	// Namespace limits the operator to one namespace; empty: all.
	Namespace string
	// Resync refreshes each status this often (ring, connections).
	Resync time.Duration
	Logger *slog.Logger
}

// NewScheme knows the API types the operator reads and writes.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = appsv1.AddToScheme(s)
	_ = policyv1.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	return s
}

// Run runs the operator until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctrl.SetLogger(logr.FromSlogHandler(o.Logger.Handler()))
	cfg := o.Config
	if cfg == nil {
		var err error
		if cfg, err = ctrl.GetConfig(); err != nil {
			return err
		}
	}
	mo := ctrl.Options{
		Scheme:                 NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: o.HealthAddr,
		LeaderElection:         o.LeaderElect,
		LeaderElectionID:       "scc-operator.socketcluster.io",
	}
	if o.Namespace != "" {
		mo.Cache = cache.Options{DefaultNamespaces: map[string]cache.Config{o.Namespace: {}}}
		mo.LeaderElectionNamespace = o.Namespace
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return err
	}
	r := &Reconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(),
		Recorder: mgr.GetEventRecorderFor("scc-operator"), Resync: o.Resync}
	r.Views = StateHTTP{Client: mgr.GetClient()}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	o.Logger.Info("operator starting", "namespace", o.Namespace, "leaderElect", o.LeaderElect)
	return mgr.Start(ctx)
}
