package metrics

import "github.com/prometheus/client_golang/prometheus"

// newLimitCollectors builds and registers the collectors of the abuse
// limits: connection caps, folded refusal records and the audit volume.
func (m *Metrics) newLimitCollectors(register func(prometheus.Collector)) {
	m.ConnectionsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "connections_open", Help: "Open connections by listener (api, admin)."}, []string{"listener"})
	m.ConnectionsLimit = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "connections_limit", Help: "The connection cap in effect by listener (server.max_connections, server.admin_max_connections)."}, []string{"listener"})
	m.ConnectionsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_refused_total", Help: "Connections closed at accept by listener and reason: max_connections (the listener's cap, no idle connection to close) or max_connections_per_client (the client address's cap)."}, []string{"listener", "reason"})
	m.ConnectionsClosed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_idle_closed_total", Help: "Idle keep-alive connections closed (oldest idle first) to make room near the listener's cap, and at the cap connections that have not sent a request yet (oldest first)."}, []string{"listener"})
	m.DenialsFolded = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "denial_records_folded_total", Help: "Refusals counted into a summary record instead of recorded one by one, by cause: record_budget, volume_low, auth_failure_budget."}, []string{"cause"})
	m.AuditVolumeFree = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "audit_volume_free_bytes", Help: "Free space on the SQLite audit volume (available to the dispenser)."})
	m.AuditVolumeLow = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "audit_volume_low", Help: "1 while the SQLite audit volume has less free space than audit.min_free_space: refusals are summaries only."})
	for _, c := range []prometheus.Collector{m.ConnectionsOpen, m.ConnectionsLimit, m.ConnectionsRefused, m.ConnectionsClosed, m.DenialsFolded, m.AuditVolumeFree, m.AuditVolumeLow} {
		register(c)
	}
}

// ConnLimit publishes a listener's connection cap.
func (m *Metrics) ConnLimit(listener string, n int) {
	if m == nil {
		return
	}
	m.ConnectionsLimit.WithLabelValues(listener).Set(float64(n))
}

// ConnOpen adds delta to a listener's open connections.
func (m *Metrics) ConnOpen(listener string, delta int) {
	if m == nil {
		return
	}
	m.ConnectionsOpen.WithLabelValues(listener).Add(float64(delta))
}

// ConnRefused counts a connection closed at accept.
func (m *Metrics) ConnRefused(listener, reason string) {
	if m == nil {
		return
	}
	m.ConnectionsRefused.WithLabelValues(listener, reason).Inc()
}

// ConnIdleClosed counts an idle connection, or one that has not sent a
// request yet, closed to make room.
func (m *Metrics) ConnIdleClosed(listener string) {
	if m == nil {
		return
	}
	m.ConnectionsClosed.WithLabelValues(listener).Inc()
}

// DenialFolded counts a refusal folded into a summary record.
func (m *Metrics) DenialFolded(cause string) {
	if m == nil {
		return
	}
	m.DenialsFolded.WithLabelValues(cause).Inc()
}

// AuditVolume publishes the audit volume's free space and whether it is
// under the floor.
func (m *Metrics) AuditVolume(free uint64, low bool) {
	if m == nil {
		return
	}
	m.AuditVolumeFree.Set(float64(free))
	v := 0.0
	if low {
		v = 1
	}
	m.AuditVolumeLow.Set(v)
}
