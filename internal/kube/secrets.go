// Package kube is the little of the Kubernetes API that `scc
// bootstrap-secrets` needs, spoken over HTTPS with the pod's service
// account: read a Secret, create it when absent. (The operator uses
// controller-runtime; this keeps the plain manifests' install Job free of
// client libraries.)
package kube

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// Client calls one API server as one identity.
type Client struct {
	Base  string // https://host:port
	Token string
	HTTP  *http.Client
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InCluster is the client of a pod's service account, and its namespace.
func InCluster() (*Client, string, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, "", errors.New("kube: not in a cluster (KUBERNETES_SERVICE_HOST unset)")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return nil, "", err
	}
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return nil, "", err
	}
	ns, err := os.ReadFile(saDir + "/namespace")
	if err != nil {
		return nil, "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, "", errors.New("kube: no certificate in the service account's ca.crt")
	}
	c := &Client{Base: "https://" + net.JoinHostPort(host, port), Token: strings.TrimSpace(string(token)),
		HTTP: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	return c, strings.TrimSpace(string(ns)), nil
}

// StatusError is an API answer other than success.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("kube: HTTP %d: %s", e.Code, e.Message) }

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var st struct{ Message string }
		_ = json.Unmarshal(b, &st)
		if st.Message == "" {
			st.Message = strings.TrimSpace(string(b))
		}
		return &StatusError{Code: resp.StatusCode, Message: st.Message}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// EnsureSecret makes sure the Secret ns/name exists with every key of
// keys: it is created with a random value (32 bytes, hex) for each key
// when absent. An existing Secret is left as it is (the user's own, or
// one made before); its missing keys are reported, not added. It reports
// whether it created the Secret.
func (c *Client) EnsureSecret(ctx context.Context, ns, name string, keys []string) (bool, error) {
	path := "/api/v1/namespaces/" + ns + "/secrets"
	var existing struct {
		Data map[string]string `json:"data"`
	}
	err := c.do(ctx, http.MethodGet, path+"/"+name, nil, &existing)
	if err == nil {
		var missing []string
		for _, k := range keys {
			if _, ok := existing.Data[k]; !ok {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			return false, fmt.Errorf("kube: secret %s/%s exists without %s", ns, name, strings.Join(missing, ", "))
		}
		return false, nil
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		return false, err
	}
	data := map[string]string{}
	for _, k := range keys {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return false, err
		}
		data[k] = hex.EncodeToString(b[:])
	}
	secret := map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
		"metadata":   map[string]any{"name": name, "namespace": ns, "labels": map[string]string{"app.kubernetes.io/part-of": "scc"}},
		"stringData": data,
	}
	err = c.do(ctx, http.MethodPost, path, secret, nil)
	if errors.As(err, &se) && se.Code == http.StatusConflict {
		return false, nil // another run made it meanwhile
	}
	return err == nil, err
}
