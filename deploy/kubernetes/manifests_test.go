// This test reads the plain manifests and checks what a review would:
// every flag they pass exists in the scc binary, every reference resolves,
// and every pod runs unprivileged with probes, requests, spreading and a
// grace period longer than its drain. (Applying them to a real node is the
// end-to-end suite's part.)
package kubernetes

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/scc-k8s/scc/internal/testutil"
)

type object map[string]any

func (o object) get(path ...string) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func (o object) str(path ...string) string { s, _ := o.get(path...).(string); return s }

func (o object) obj(path ...string) object { m, _ := o.get(path...).(map[string]any); return m }

func (o object) list(path ...string) []object {
	l, _ := o.get(path...).([]any)
	var out []object
	for _, x := range l {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func load(t *testing.T) []object {
	t.Helper()
	files, _ := filepath.Glob("*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	var out []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o map[string]any
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o != nil {
				out = append(out, o)
			}
		}
	}
	return out
}

func TestManifests(t *testing.T) {
	objs := load(t)
	byKind := map[string][]object{}
	for _, o := range objs {
		kind, name := o.str("kind"), o.str("metadata", "name")
		if o.str("apiVersion") == "" || kind == "" || name == "" {
			t.Fatalf("an object without apiVersion, kind or name: %v", o)
		}
		if kind != "Namespace" && o.str("metadata", "namespace") != "scc" {
			t.Errorf("%s %s is not in namespace scc", kind, name)
		}
		byKind[kind] = append(byKind[kind], o)
	}
	flags := sccFlags(t)
	secretKeys := bootstrapKeys(t, byKind["Job"])

	for _, d := range byKind["Deployment"] {
		name := d.str("metadata", "name")
		pod := d.obj("spec", "template")
		spec := pod.obj("spec")
		if !mapContains(pod.obj("metadata", "labels"), d.obj("spec", "selector", "matchLabels")) {
			t.Errorf("%s: the selector does not match the pod labels", name)
		}
		if spec.get("securityContext", "runAsNonRoot") != true || spec.str("securityContext", "seccompProfile", "type") != "RuntimeDefault" {
			t.Errorf("%s: the pod must run as non-root with the RuntimeDefault seccomp profile", name)
		}
		for _, c := range spec.list("containers") {
			sc := c.obj("securityContext")
			if sc.get("allowPrivilegeEscalation") != false || sc.get("readOnlyRootFilesystem") != true ||
				!slices.Contains(asStrings(sc.get("capabilities", "drop")), "ALL") {
				t.Errorf("%s: the container must not escalate, must have a read-only root and drop every capability", name)
			}
			if c.str("readinessProbe", "httpGet", "path") != "/readyz" || c.str("livenessProbe", "httpGet", "path") != "/healthz" {
				t.Errorf("%s: probes must be /readyz and /healthz", name)
			}
			if c.obj("resources", "requests")["cpu"] == nil || c.obj("resources", "requests")["memory"] == nil {
				t.Errorf("%s: cpu and memory requests are required", name)
			}
			env := map[string]object{}
			for _, e := range c.list("env") {
				env[e.str("name")] = e
			}
			if env["POD_IP"].str("valueFrom", "fieldRef", "fieldPath") != "status.podIP" ||
				env["POD_NAME"].str("valueFrom", "fieldRef", "fieldPath") != "metadata.name" {
				t.Errorf("%s: POD_IP and POD_NAME from the downward API", name)
			}
			for en, e := range env {
				if ref := e.obj("valueFrom", "secretKeyRef"); ref != nil {
					if ref.str("name") != "scc-secrets" || !slices.Contains(secretKeys, ref.str("key")) {
						t.Errorf("%s: %s refers to %s/%s, which the install Job does not make", name, en, ref.str("name"), ref.str("key"))
					}
				}
			}
			if env["SCC_CLUSTER_TOKEN"] == nil {
				t.Errorf("%s: no cluster token", name)
			}
			args := asStrings(c.get("args"))
			if len(args) == 0 {
				t.Fatalf("%s: no args", name)
			}
			cmd := args[0]
			for _, a := range args[1:] {
				if f, ok := strings.CutPrefix(a, "--"); ok && !slices.Contains(flags[cmd], strings.SplitN(f, "=", 2)[0]) {
					t.Errorf("%s: `scc %s` has no flag --%s", name, cmd, f)
				}
			}
			if drain := argValue(args, "--drain-timeout"); drain != "" {
				d, err := time.ParseDuration(drain)
				grace, _ := spec.get("terminationGracePeriodSeconds").(int)
				if err != nil || time.Duration(grace)*time.Second <= d {
					t.Errorf("%s: terminationGracePeriodSeconds %d must exceed --drain-timeout %s", name, grace, drain)
				}
			}
		}
		switch name {
		case "scc-state":
			if d.str("spec", "strategy", "type") != "Recreate" || d.get("spec", "replicas") != 1 {
				t.Errorf("scc-state: one replica, Recreate")
			}
		default:
			spread := spec.list("topologySpreadConstraints")
			keys := []string{}
			for _, s := range spread {
				if s.str("whenUnsatisfiable") != "ScheduleAnyway" {
					t.Errorf("%s: spreading must not block scheduling", name)
				}
				keys = append(keys, s.str("topologyKey"))
			}
			if !slices.Contains(keys, "kubernetes.io/hostname") || !slices.Contains(keys, "topology.kubernetes.io/zone") {
				t.Errorf("%s: spread across nodes and zones", name)
			}
			if !hasPDB(byKind["PodDisruptionBudget"], pod.obj("metadata", "labels")) {
				t.Errorf("%s: no PodDisruptionBudget", name)
			}
		}
	}
	for _, s := range byKind["Service"] {
		name := s.str("metadata", "name")
		var dep object
		for _, d := range byKind["Deployment"] {
			if mapContains(d.obj("spec", "template", "metadata", "labels"), s.obj("spec", "selector")) {
				dep = d
			}
		}
		if dep == nil {
			t.Errorf("Service %s selects no Deployment's pods", name)
			continue
		}
		var ports []string
		for _, c := range dep.list("spec", "template", "spec", "containers") {
			for _, p := range c.list("ports") {
				ports = append(ports, p.str("name"))
			}
		}
		for _, p := range s.list("spec", "ports") {
			if tp := p.str("targetPort"); tp != "" && !slices.Contains(ports, tp) {
				t.Errorf("Service %s: target port %s is not a container port of %s", name, tp, dep.str("metadata", "name"))
			}
		}
	}
	if svc := find(byKind["Service"], "scc-gateway"); svc == nil || svc.str("spec", "type") != "LoadBalancer" {
		t.Error("the gateway's Service must be a LoadBalancer (with its NodePort)")
	}
}

func find(objs []object, name string) object {
	for _, o := range objs {
		if o.str("metadata", "name") == name {
			return o
		}
	}
	return nil
}

func hasPDB(pdbs []object, labels object) bool {
	for _, p := range pdbs {
		if mapContains(labels, p.obj("spec", "selector", "matchLabels")) {
			return true
		}
	}
	return false
}

func mapContains(labels, sel object) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func asStrings(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// bootstrapKeys are the keys the install Job gives scc-secrets.
func bootstrapKeys(t *testing.T, jobs []object) []string {
	t.Helper()
	for _, j := range jobs {
		for _, c := range j.list("spec", "template", "spec", "containers") {
			args := asStrings(c.get("args"))
			if len(args) > 0 && args[0] == "bootstrap-secrets" && argValue(args, "--secret") == "scc-secrets" {
				return strings.Split(argValue(args, "--keys"), ",")
			}
		}
	}
	t.Fatal("no Job runs scc bootstrap-secrets for scc-secrets")
	return nil
}

// sccFlags lists each command's flags as the binary prints them.
func sccFlags(t *testing.T) map[string][]string {
	t.Helper()
	bin := testutil.SccBinary(t)
	out := map[string][]string{}
	re := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, cmd := range []string{"state", "broker", "worker", "gateway", "bootstrap-secrets"} {
		b, _ := exec.Command(bin, cmd, "-h").CombinedOutput()
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[cmd] = append(out[cmd], m[1])
		}
		if len(out[cmd]) == 0 {
			t.Fatalf("scc %s -h listed no flags:\n%s", cmd, b)
		}
	}
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}
