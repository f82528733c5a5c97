package broker

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	links       prometheus.Gauge
	publishes   prometheus.Counter
	deliveries  prometheus.Counter
	slowLinks   prometheus.Counter
	notOwner    prometheus.Counter
	silentLinks prometheus.Counter
	unconfirmed prometheus.Counter
	replaced    prometheus.Counter
	reported    prometheus.Counter
	ghosts      prometheus.Gauge
	unreachable prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		links: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "broker", Name: "links", Help: "Connected worker links.",
		}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "publishes_total", Help: "Publishes routed.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "deliveries_total", Help: "Messages queued to worker links.",
		}),
		slowLinks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "slow_links_total", Help: "Links cut because their queue passed its limit.",
		}),
		notOwner: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "publishes_not_owner_total", Help: "Publishes refused: routed by an older ring to a channel this broker does not own.",
		}),
		silentLinks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "silent_links_total", Help: "Links cut because nothing came from their worker for the link timeout.",
		}),
		unconfirmed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "deliveries_unconfirmed_total", Help: "Deliveries whose worker's link ended before it confirmed them (their publishes failed).",
		}),
		reported: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "links_reported_lost_total", Help: "Links ended because their worker reported them lost (through state) before this broker's own timeout.",
		}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "links_replaced_total", Help: "Links ended because their worker's new link carried its subscriptions.",
		}),
		ghosts: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "broker", Name: "lost_links_held", Help: "Workers whose lost link's subscriptions are held (publishes to their channels fail until the worker links again or leaves).",
		}),
		unreachable: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "broker", Name: "publishes_unreachable_total", Help: "Publishes failed because a worker whose lost link's subscriptions are held was subscribed to their channel.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.links, m.publishes, m.deliveries, m.slowLinks, m.notOwner, m.silentLinks, m.unconfirmed, m.replaced, m.reported, m.ghosts, m.unreachable)
	}
	return m
}
