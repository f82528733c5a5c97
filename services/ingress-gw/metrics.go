package gateway

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connections     prometheus.Gauge
	upgrades        *prometheus.CounterVec
	retries         prometheus.Counter
	refused         *prometheus.CounterVec
	httpRequests    prometheus.Counter
	bytes           *prometheus.CounterVec
	withoutRequest  prometheus.Counter
	routableWorkers prometheus.Gauge
	workerGone      prometheus.Counter
	drainCut        *prometheus.CounterVec
}

// told counts a client told with close code 4000 to come back at once:
// its worker died, or (cut) this gateway's drain deadline passed.
func (m *metrics) told(cut bool) {
	if cut {
		m.drainCut.WithLabelValues("told").Inc()
		return
	}
	m.workerGone.Inc()
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "connections",
			Help: "Upgraded (WebSocket) connections being proxied to workers.",
		}),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "upgrades_total",
			Help: "WebSocket upgrades by result: ok, no_worker (none routable), worker_refused (a worker's non-101 answer relayed), failed (every worker tried failed).",
		}, []string{"result"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "worker_retries_total",
			Help: "Upgrades sent to another worker after one could not be dialled or was draining.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "refused_total",
			Help: "Requests refused at the edge by reason: per_ip (429), upgrade_rate (503), path (404), draining (503).",
		}, []string{"reason"}),
		httpRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "http_requests_total",
			Help: "Plain HTTP requests proxied to workers.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "bytes_total",
			Help: "Bytes moved on upgraded connections: in (client to worker), out (worker to client).",
		}, []string{"direction"}),
		withoutRequest: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "conns_without_request_total",
			Help: "Connections closed before a whole request arrived: garbage (400), oversized headers (431), the header timeout (slowloris), or the client giving up.",
		}),
		routableWorkers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "routable_workers",
			Help: "Workers new connections may go to (ready, not draining).",
		}),
		workerGone: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "worker_gone_closes_total",
			Help: "Clients whose worker's end came unannounced (it died), told so with close code 4000 so that they reconnect at once.",
		}),
		drainCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "gateway", Name: "drain_deadline_closes_total",
			Help: "Clients still connected when this gateway's drain deadline passed: told (close code 4000, so that they reconnect at once through another gateway) or cut (no close frame could go: their worker was in the middle of a frame to them, or they did not go within a second).",
		}, []string{"how"}),
	}
	reg.MustRegister(m.connections, m.upgrades, m.retries, m.refused, m.httpRequests, m.bytes,
		m.withoutRequest, m.routableWorkers, m.workerGone, m.drainCut)
	return m
}
