package cluster

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	epoch      prometheus.Gauge
	channels   prometheus.Gauge
	linksUp    prometheus.Gauge
	buffered   prometheus.Counter
	resent     prometheus.Counter
	bufferFull prometheus.Counter
	linkFull   prometheus.Counter
	notOwner   prometheus.Counter
	lost       prometheus.Counter
	linkSilent prometheus.Counter
	partitions prometheus.Counter
	queueDepth *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		epoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "worker", Name: "ring_epoch", Help: "Ring epoch this worker applies.",
		}),
		channels: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "worker", Name: "upstream_channels", Help: "Channels subscribed upstream.",
		}),
		linksUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "worker", Name: "broker_links_up", Help: "Broker links connected.",
		}),
		buffered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "publishes_buffered_total", Help: "Publishes held because their broker was unreachable.",
		}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "publishes_resent_total", Help: "Held publishes sent to a broker later.",
		}),
		bufferFull: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "publishes_refused_total", Help: "Publishes failed because the hold buffer was full.",
		}),
		linkFull: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "publishes_link_full_total", Help: "Publishes failed because their broker link had its byte limit queued.",
		}),
		notOwner: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "publishes_stale_ring_total", Help: "Publishes failed because brokers kept refusing them as routed by an out-of-date ring.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "publishes_lost_total", Help: "Publishes in flight on a broker link that broke (known lost or unconfirmed; their publishers got an error).",
		}),
		linkSilent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "broker_links_silent_total", Help: "Broker links cut because nothing came back on them for the link timeout.",
		}),
		partitions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "worker", Name: "partition_handovers_total", Help: "Times this worker, cut off from a broker the others reach, handed its clients over.",
		}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "worker", Name: "broker_link_queue_depth", Help: "Operations waiting to be sent, per broker link.",
		}, []string{"broker"}),
	}
	if reg != nil {
		reg.MustRegister(m.epoch, m.channels, m.linksUp, m.buffered, m.resent, m.bufferFull, m.linkFull, m.notOwner, m.lost, m.linkSilent, m.partitions, m.queueDepth)
	}
	return m
}
