package operator

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/controller-runtime/pkg/client"

	manifests "github.com/scc-k8s/scc/deploy/kubernetes"
	"github.com/scc-k8s/scc/operator/api/v1alpha1"
)

// Labels and annotations the operator sets.
const (
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	labelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "scc-operator"
	// annotationHash is the hash of what the operator last wrote; an
	// object whose hash matches needs no update.
	annotationHash = "socketcluster.io/spec-hash"
	// annotationConfig on pod templates rolls the pods when the
	// ConfigMap they read changes.
	annotationConfig = "socketcluster.io/config-hash"
	// planPrefix is the plain manifests' name prefix.
	planPrefix = "scc-"
)

// Components, by the suffix of their objects' names.
const (
	compState   = "state"
	compBroker  = "broker"
	compWorker  = "worker"
	compGateway = "gateway"
)

var (
	planOnce sync.Once
	plan     []client.Object
	planErr  error
)

// planObjects are the plain manifests' Deployments, Services and
// PodDisruptionBudgets, decoded once. (Their namespace and install Job are
// the plain install's own: the operator makes the secrets itself.)
func planObjects() ([]client.Object, error) {
	planOnce.Do(func() {
		sch := runtime.NewScheme()
		_ = appsv1.AddToScheme(sch)
		_ = corev1.AddToScheme(sch)
		_ = policyv1.AddToScheme(sch)
		dec := serializer.NewCodecFactory(sch).UniversalDeserializer()
		files, err := fs.Glob(manifests.Manifests, "*.yaml")
		if err != nil {
			planErr = err
			return
		}
		for _, f := range files {
			b, _ := fs.ReadFile(manifests.Manifests, f)
			for _, doc := range bytes.Split(b, []byte("\n---")) {
				if len(bytes.TrimSpace(doc)) == 0 {
					continue
				}
				obj, _, err := dec.Decode(doc, nil, nil)
				if err != nil {
					continue // kinds the operator does not make (Namespace, Job, RBAC)
				}
				switch o := obj.(type) {
				case *appsv1.Deployment, *corev1.Service, *policyv1.PodDisruptionBudget:
					plan = append(plan, o.(client.Object))
				}
			}
		}
		if len(plan) == 0 {
			planErr = fmt.Errorf("operator: no objects in the embedded manifests")
		}
	})
	return plan, planErr
}

// componentOf is the component an object of the plain manifests belongs to.
func componentOf(o client.Object) string { return strings.TrimPrefix(o.GetName(), planPrefix) }

// objectName is the name of a component's objects for a SocketCluster.
func objectName(sc *v1alpha1.SocketCluster, comp string) string { return sc.Name + "-" + comp }

// selectorLabels select one component's pods of one SocketCluster.
func selectorLabels(sc *v1alpha1.SocketCluster, comp string) map[string]string {
	return map[string]string{labelName: planPrefix + comp, labelInstance: sc.Name}
}

// secretName is the Secret holding auth-key and cluster-token.
func secretName(sc *v1alpha1.SocketCluster) string {
	if sc.Spec.Auth.SecretName != "" {
		return sc.Spec.Auth.SecretName
	}
	return sc.Name + "-secrets"
}

// configMap carries the workers' and gateways' settings as the SCC_*
// environment variables their flags read.
func configMap(sc *v1alpha1.SocketCluster) *corev1.ConfigMap {
	env := map[string]string{}
	p, a := sc.Spec.Protocol, sc.Spec.Auth
	if p.Version != 0 {
		env["SCC_PROTOCOL_VERSION"] = strconv.Itoa(int(p.Version))
	}
	if p.Path != "" {
		env["SCC_PATH"] = p.Path
	}
	if p.PingInterval != nil {
		env["SCC_PING_INTERVAL"] = p.PingInterval.Duration.String()
	}
	if p.MaxPayload != nil {
		env["SCC_MAX_PAYLOAD"] = strconv.FormatInt(*p.MaxPayload, 10)
	}
	if p.Origins != "" {
		env["SCC_ORIGINS"] = p.Origins
	}
	if p.AllowClientPublish != nil {
		env["SCC_ALLOW_CLIENT_PUBLISH"] = strconv.FormatBool(*p.AllowClientPublish)
	}
	if p.PerMessageDeflate {
		env["SCC_PER_MESSAGE_DEFLATE"] = "true"
	}
	if a.Algorithm != "" {
		env["SCC_AUTH_ALGORITHM"] = a.Algorithm
	}
	if a.DefaultExpiry != nil {
		env["SCC_AUTH_DEFAULT_EXPIRY"] = a.DefaultExpiry.Duration.String()
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: objectName(sc, "config"), Namespace: sc.Namespace, Labels: commonLabels(sc, "config")},
		Data:       env,
	}
}

func commonLabels(sc *v1alpha1.SocketCluster, comp string) map[string]string {
	return map[string]string{labelName: planPrefix + comp, labelInstance: sc.Name, labelManagedBy: managedBy,
		"app.kubernetes.io/part-of": "scc"}
}

// desired is every object a SocketCluster asks for except its Secret,
// each stamped with the hash of its content.
func desired(sc *v1alpha1.SocketCluster) ([]client.Object, error) {
	objs, err := planObjects()
	if err != nil {
		return nil, err
	}
	cm := configMap(sc)
	cfgHash := hashOf(cm.Data)
	out := []client.Object{cm}
	for _, o := range objs {
		o = o.DeepCopyObject().(client.Object)
		comp := componentOf(o)
		o.SetName(objectName(sc, comp))
		o.SetNamespace(sc.Namespace)
		labels := o.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[labelInstance], labels[labelManagedBy] = sc.Name, managedBy
		o.SetLabels(labels)
		switch o := o.(type) {
		case *appsv1.Deployment:
			shapeDeployment(sc, comp, o, cfgHash)
		case *corev1.Service:
			o.Spec.Selector = selectorLabels(sc, comp)
			if comp == compGateway {
				o.Spec.Type = orDefault(sc.Spec.Gateways.ServiceType, corev1.ServiceTypeLoadBalancer)
				if o.Spec.Type != corev1.ServiceTypeLoadBalancer && o.Spec.Type != corev1.ServiceTypeNodePort {
					o.Spec.ExternalTrafficPolicy = ""
				}
			}
		case *policyv1.PodDisruptionBudget:
			o.Spec.Selector = &metav1.LabelSelector{MatchLabels: selectorLabels(sc, comp)}
		}
		out = append(out, o)
	}
	for _, o := range out {
		stamp(o)
	}
	return out, nil
}

func shapeDeployment(sc *v1alpha1.SocketCluster, comp string, d *appsv1.Deployment, cfgHash string) {
	sel := selectorLabels(sc, comp)
	d.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	tpl := &d.Spec.Template
	for k, v := range sel {
		tpl.Labels[k] = v
	}
	for i := range tpl.Spec.TopologySpreadConstraints {
		tpl.Spec.TopologySpreadConstraints[i].LabelSelector = &metav1.LabelSelector{MatchLabels: sel}
	}
	var resources corev1.ResourceRequirements
	switch comp {
	case compState:
		resources = sc.Spec.State.Resources
	case compBroker:
		d.Spec.Replicas = orInt32(sc.Spec.Brokers.Replicas, 2)
		resources = sc.Spec.Brokers.Resources
	case compWorker:
		d.Spec.Replicas = orInt32(sc.Spec.Workers.Replicas, 3)
		resources = sc.Spec.Workers.Resources
	case compGateway:
		d.Spec.Replicas = orInt32(sc.Spec.Gateways.Replicas, 2)
		resources = sc.Spec.Gateways.Resources
	}
	c := &tpl.Spec.Containers[0]
	c.Image = orDefault(sc.Spec.Image, "scc:dev")
	c.ImagePullPolicy = orDefault(sc.Spec.ImagePullPolicy, corev1.PullIfNotPresent)
	if len(resources.Requests) > 0 || len(resources.Limits) > 0 {
		c.Resources = resources
	}
	for i, a := range c.Args {
		c.Args[i] = strings.ReplaceAll(a, planPrefix+compState+":", objectName(sc, compState)+":")
	}
	for i := range c.Env {
		if r := c.Env[i].ValueFrom; r != nil && r.SecretKeyRef != nil {
			r.SecretKeyRef.Name = secretName(sc)
		}
	}
	if comp == compWorker || comp == compGateway {
		c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: objectName(sc, "config")}}})
		if tpl.Annotations == nil {
			tpl.Annotations = map[string]string{}
		}
		tpl.Annotations[annotationConfig] = cfgHash
	}
	if comp == compWorker {
		w := sc.Spec.Workers
		rate := orInt32(w.DrainRate, 1000)
		timeout := 30 * time.Second
		if w.DrainTimeout != nil {
			timeout = w.DrainTimeout.Duration
		}
		setFlag(c, "--drain-rate", strconv.Itoa(int(*rate)))
		setFlag(c, "--drain-timeout", timeout.String())
		grace := int64(timeout/time.Second) + 10
		tpl.Spec.TerminationGracePeriodSeconds = &grace
	}
	if comp == compGateway && sc.Spec.Gateways.TLSSecretName != "" {
		tpl.Spec.Volumes = append(tpl.Spec.Volumes, corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: sc.Spec.Gateways.TLSSecretName}}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "tls", MountPath: "/etc/scc/tls", ReadOnly: true})
		setFlag(c, "--tls-cert", "/etc/scc/tls/tls.crt")
		setFlag(c, "--tls-key", "/etc/scc/tls/tls.key")
	}
}

// setFlag sets "--name value" in a container's args, replacing it if there.
func setFlag(c *corev1.Container, name, value string) {
	if i := slices.Index(c.Args, name); i >= 0 && i+1 < len(c.Args) {
		c.Args[i+1] = value
		return
	}
	c.Args = append(c.Args, name, value)
}

// stamp records the hash of an object's content in its annotations.
func stamp(o client.Object) {
	a := o.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	delete(a, annotationHash)
	o.SetAnnotations(a)
	a[annotationHash] = hashOf(o)
	o.SetAnnotations(a)
}

func hashOf(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func orInt32(p *int32, def int32) *int32 {
	if p != nil {
		v := *p
		return &v
	}
	return &def
}

func orDefault[T ~string](v, def T) T {
	if v == "" {
		return def
	}
	return v
}
