package worker

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	connections     prometheus.Gauge
	connectsTotal   prometheus.Counter
	handshakes      prometheus.Counter
	disconnects     *prometheus.CounterVec
	subscriptions   prometheus.Gauge
	channels        prometheus.Gauge
	messagesIn      prometheus.Counter
	messagesOut     prometheus.Counter
	publishesIn     prometheus.Counter
	deliveries      prometheus.Counter
	slowConsumers   prometheus.Counter
	rawMessages     prometheus.Counter
	badMessages     *prometheus.CounterVec
	panics          *prometheus.CounterVec
	handshakeReject prometheus.Counter
	drained         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "worker", Name: "connections",
			Help: "Open WebSocket connections.",
		}),
		connectsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "connections_total",
			Help: "WebSocket connections accepted.",
		}),
		handshakes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "handshakes_total",
			Help: "SocketCluster handshakes completed.",
		}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "disconnects_total",
			Help: "Closed connections by close code.",
		}, []string{"code"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "worker", Name: "subscriptions",
			Help: "Socket channel subscriptions.",
		}),
		channels: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "worker", Name: "channels",
			Help: "Channels with local subscribers (one upstream subscription each).",
		}),
		messagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "messages_in_total",
			Help: "WebSocket messages received from clients.",
		}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "messages_out_total",
			Help: "Frames queued to clients.",
		}),
		publishesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "publishes_total",
			Help: "Publishes accepted from clients and the exchange.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "deliveries_total",
			Help: "Channel messages queued to subscribed sockets.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "slow_consumer_closes_total",
			Help: "Sockets closed because their outbound queue passed its byte limit.",
		}),
		rawMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "raw_messages_total",
			Help: "Messages that were not SocketCluster frames.",
		}),
		badMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "rejected_frames_total",
			Help: "Frames refused, by reason.",
		}, []string{"reason"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "panics_total",
			Help: "Panics recovered in a socket's handlers (the socket was closed with 1011 or its invoke failed), by where.",
		}, []string{"where"}),
		handshakeReject: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "handshake_rejections_total",
			Help: "Upgrades or handshakes refused (path, origin, middleware).",
		}),
		drained: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "drained_sockets_total",
			Help: "Sockets closed by a drain (this worker's, or a gateway's that is leaving).",
		}),
	}
	reg.MustRegister(m.drained, m.connections, m.connectsTotal, m.handshakes, m.disconnects, m.subscriptions,
		m.channels, m.messagesIn, m.messagesOut, m.publishesIn, m.deliveries, m.slowConsumers,
		m.rawMessages, m.badMessages, m.panics, m.handshakeReject)
	return m
}
