package operator_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/scc-k8s/scc/operator"
	"github.com/scc-k8s/scc/operator/api/v1alpha1"
)

// One control plane for the package: a real etcd and kube-apiserver
// (envtest, KUBEBUILDER_ASSETS from scripts/envtest.sh) with our CRD, a
// kube-controller-manager running only the garbage collector (when the
// assets hold one), and the operator's manager.
var (
	cfg   *rest.Config
	k8s   client.Client
	views = &fakeViews{byNS: map[string]*operator.View{}}
	hasGC bool
	// writes counts the operator's writes to the API server.
	writes = &writeCounter{}
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Println("operator: KUBEBUILDER_ASSETS unset (scripts/envtest.sh prepares the assets; scripts/test.sh sets it): skipping the envtest suite")
		os.Exit(0)
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "deploy", "kubernetes", "operator", "crd")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	stopGC := startGC(env)
	code := run(m)
	stopGC()
	_ = env.Stop()
	os.Exit(code)
}

func run(m *testing.M) int {
	sch := operator.NewScheme()
	var err error
	if k8s, err = client.New(cfg, client.Options{Scheme: sch}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opCfg := rest.CopyConfig(cfg)
	opCfg.WrapTransport = writes.wrap
	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{Scheme: sch, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := &operator.Reconciler{Client: mgr.GetClient(), Scheme: sch, Recorder: mgr.GetEventRecorderFor("scc-operator"),
		Views: views, Resync: 500 * time.Millisecond}
	if err := r.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	<-done
	return code
}

// startGC runs kube-controller-manager's garbage collector against the
// test API server when the assets directory has kube-controller-manager
// (scripts/envtest.sh builds it), so that deleting a SocketCluster really
// deletes what it owns.
func startGC(env *envtest.Environment) func() {
	bin := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return func() {}
	}
	u, err := env.AddUser(envtest.User{Name: "gc", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gc user:", err)
		return func() {}
	}
	kc, _ := u.KubeConfig()
	dir, _ := os.MkdirTemp("", "scc-envtest-gc-")
	kf := filepath.Join(dir, "kubeconfig")
	_ = os.WriteFile(kf, kc, 0o600)
	cmd := exec.Command(bin, "--kubeconfig="+kf, "--controllers=garbagecollector", "--leader-elect=false",
		"--secure-port=0", "--use-service-account-credentials=false")
	logf, _ := os.Create(filepath.Join(dir, "kcm.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "kube-controller-manager:", err)
		return func() { os.RemoveAll(dir) }
	}
	hasGC = true
	return func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		os.RemoveAll(dir)
	}
}

// fakeViews stands in for the state service: the envtest has no pods.
type fakeViews struct {
	mu   sync.Mutex
	byNS map[string]*operator.View
}

func (f *fakeViews) View(_ context.Context, sc *v1alpha1.SocketCluster) (*operator.View, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.byNS[sc.Namespace]; ok {
		c := *v
		return &c, nil
	}
	return nil, fmt.Errorf("no state service in namespace %s", sc.Namespace)
}

func (f *fakeViews) set(ns string, v *operator.View) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byNS[ns] = v
}

// namespace creates a namespace for one test.
func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	return ns.Name
}
