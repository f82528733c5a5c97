package state_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/proto/sccv1"
	"github.com/scc-k8s/scc/services/state"
)

// GET /cluster shows the ring and every worker with its load.
func TestClusterViewOverHTTP(t *testing.T) {
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	n, err := state.Start(state.ServiceConfig{Listen: "127.0.0.1:0", HTTPListen: httpAddr,
		State: state.Config{Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	join(t, n.Addr().String(), "b1", sccv1.Role_ROLE_BROKER, nil)
	join(t, n.Addr().String(), "w1", sccv1.Role_ROLE_WORKER, nil)
	var v struct {
		Epoch   string `json:"epoch"`
		Phase   string `json:"phase"`
		Brokers []struct {
			ID string `json:"id"`
		} `json:"brokers"`
		Workers []struct {
			ID      string `json:"id"`
			Address string `json:"address"`
			Load    string `json:"load"`
		} `json:"workers"`
	}
	eventually(t, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/cluster")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
			return false
		}
		return len(v.Brokers) == 1 && len(v.Workers) == 1 && v.Phase == "PHASE_STABLE"
	}, "the broker in the ring and the worker listed")
	if v.Brokers[0].ID != "b1" || v.Workers[0].ID != "w1" || v.Workers[0].Address != "w1:1" || v.Epoch == "" || v.Workers[0].Load != "0" {
		t.Fatalf("view: %+v", v)
	}
}
