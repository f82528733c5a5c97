package kube

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// apiServer answers the secrets calls as the Kubernetes API does (the
// status codes EnsureSecret acts on), and refuses a wrong token.
func apiServer(t *testing.T) (*httptest.Server, map[string]map[string]string) {
	var mu sync.Mutex
	secrets := map[string]map[string]string{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"message":"Unauthorized"}`))
			return
		}
		mu.Lock()
		defer mu.Unlock()
		const prefix = "/api/v1/namespaces/scc/secrets"
		switch {
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, prefix+"/"):
			d, ok := secrets[strings.TrimPrefix(r.URL.Path, prefix+"/")]
			if !ok {
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte(`{"message":"secrets not found"}`))
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"data": d})
		case r.Method == http.MethodPost && r.URL.Path == prefix:
			var in struct {
				Metadata   struct{ Name string }
				StringData map[string]string `json:"stringData"`
			}
			_ = json.NewDecoder(r.Body).Decode(&in)
			if _, ok := secrets[in.Metadata.Name]; ok {
				w.WriteHeader(http.StatusConflict)
				return
			}
			secrets[in.Metadata.Name] = in.StringData
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{}`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, secrets
}

func TestEnsureSecret(t *testing.T) {
	srv, secrets := apiServer(t)
	c := &Client{Base: srv.URL, Token: "tok", HTTP: srv.Client()}
	ctx := context.Background()
	created, err := c.EnsureSecret(ctx, "scc", "scc-secrets", []string{"auth-key", "cluster-token"})
	if err != nil || !created {
		t.Fatalf("first run: created %v, %v", created, err)
	}
	first := secrets["scc-secrets"]
	if len(first["auth-key"]) != 64 || len(first["cluster-token"]) != 64 || first["auth-key"] == first["cluster-token"] {
		t.Fatalf("values %v", first)
	}
	created, err = c.EnsureSecret(ctx, "scc", "scc-secrets", []string{"auth-key", "cluster-token"})
	if err != nil || created || secrets["scc-secrets"]["auth-key"] != first["auth-key"] {
		t.Fatalf("second run: created %v, %v; the secret must be left as it was", created, err)
	}
	// The user's own secret without a key the cluster needs: said, not fixed.
	secrets["mine"] = map[string]string{"auth-key": "x"}
	if _, err := c.EnsureSecret(ctx, "scc", "mine", []string{"auth-key", "cluster-token"}); err == nil || !strings.Contains(err.Error(), "cluster-token") {
		t.Fatalf("incomplete secret: %v", err)
	}
	bad := &Client{Base: srv.URL, Token: "wrong", HTTP: srv.Client()}
	var se *StatusError
	if _, err := bad.EnsureSecret(ctx, "scc", "other", []string{"k"}); err == nil || !asStatus(err, &se) || se.Code != 401 {
		t.Fatalf("wrong token: %v", err)
	}
}

func asStatus(err error, se **StatusError) bool {
	s, ok := err.(*StatusError)
	*se = s
	return ok
}
