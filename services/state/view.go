package state

import (
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"
)

// serveView answers GET /cluster on the HTTP port with the cluster view
// as JSON (the ClusterView message's JSON form: epoch, phase, brokers,
// prevBrokers, workers and gateways with their address, load, readiness
// and draining). The operator reads it for its status and to learn each
// worker's connections; people read it to see the ring.
func (s *Server) serveView(w http.ResponseWriter, _ *http.Request) {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(s.View())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
