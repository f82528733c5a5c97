package state

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	members            *prometheus.GaugeVec
	epoch              prometheus.Gauge
	migrationsStarted  prometheus.Counter
	migrationsFinished prometheus.Counter
	migrationSeconds   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "state", Name: "members", Help: "Joined members by role.",
		}, []string{"role"}),
		epoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "scc", Subsystem: "state", Name: "ring_epoch", Help: "Current ring epoch.",
		}),
		migrationsStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "state", Name: "migrations_started_total", Help: "Ring migrations started.",
		}),
		migrationsFinished: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scc", Subsystem: "state", Name: "migrations_finished_total", Help: "Ring migrations finished.",
		}),
		migrationSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "scc", Subsystem: "state", Name: "migration_duration_seconds", Help: "Time from a migration's start to its end.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.members, m.epoch, m.migrationsStarted, m.migrationsFinished, m.migrationSeconds)
	}
	return m
}
