package admin

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"hookproxy/buffer"
)

// The delivery outcomes (with the status classes each can have) and the
// give-up reasons the sender reports, so that their series exist, at
// zero, before the first event. Any other value still gets its own series.
var (
	knownAttempts = map[string][]string{
		"delivered": {"2xx"},
		"retryable": {"4xx", "5xx", "network"}, // 408, 409 to a retry, 425, 429, 5xx, no answer
		"permanent": {"3xx", "4xx", "network"}, // network: blocked or invalid target
	}
	knownReasons = []string{"retries-exhausted", "max-age", "status", "gone", "blocked", "invalid-request", buffer.ReasonUnreadable}
	// knownRefusals are the proxy's reasons for a hook it does not keep
	// (proxy.RefusalReasons).
	knownRefusals = []string{"too-large", "url-too-long", "unsupported-encoding", "bad-request", "invalid-json", "pending-full", "store-error", "client-gone"}
)

// Metrics holds hookproxy's Prometheus metrics on a registry of its own.
// Its event methods have the signatures of the proxy's and the sender's
// observer hooks, so their method values can be passed as those hooks;
// they are safe for concurrent use and never block. The gauges of the
// store's state are added by New (the admin Server), which knows the
// store. Create it with NewMetrics; the zero value is not usable.
//
// No metric carries a target URL as a label: the number of targets is
// unbounded, and per-target detail is in the JSON API.
type Metrics struct {
	reg *prometheus.Registry

	captured      prometheus.Counter
	capturedBytes prometheus.Counter
	captureTime   prometheus.Histogram
	captureWaits  prometheus.Counter
	refused       *prometheus.CounterVec
	forwarded     prometheus.Counter
	passThrough   *prometheus.CounterVec
	attempts      *prometheus.CounterVec
	attemptTime   *prometheus.HistogramVec
	batches       prometheus.Counter
	hooks         prometheus.Counter
	givenUp       *prometheus.CounterVec
	givenUpHooks  *prometheus.CounterVec
	batchSize     prometheus.Histogram
}

// NewMetrics builds the event metrics, with the Go runtime and process
// collectors and a hookproxy_build_info series for version.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		captured: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookproxy_hooks_captured_total",
			Help: "Webhook requests captured and made durable (answered 202).",
		}),
		capturedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookproxy_captured_body_bytes_total",
			Help: "Body bytes of the captured webhook requests.",
		}),
		captureTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hookproxy_capture_duration_seconds",
			Help:    "Time from a webhook request's arrival to the hook being durable on disk.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		captureWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookproxy_capture_waits_total",
			Help: "Webhook requests that waited, their body unread, for the hooks being captured to fall under HOOKPROXY_MAX_CAPTURING_BYTES.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookproxy_hooks_refused_total",
			Help: "Webhook requests answered without being kept, by reason (too-large, url-too-long, unsupported-encoding, bad-request, invalid-json, pending-full, store-error, client-gone). The app does not retry them: each is a lost hook unless the app sends it again.",
		}, []string{"reason"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookproxy_hooks_forwarded_total",
			Help: "Webhook requests the store could not keep, sent straight to their receiver once (HOOKPROXY_ON_STORE_ERROR=forward).",
		}),
		passThrough: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookproxy_passthrough_requests_total",
			Help: "Requests forwarded unchanged, by kind: http (a plain proxy request) or connect (a tunnel).",
		}, []string{"kind"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookproxy_delivery_attempts_total",
			Help: "Delivery attempts by outcome (delivered, retryable, permanent) and status class (2xx..5xx, network for no response).",
		}, []string{"outcome", "status_class"}),
		attemptTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hookproxy_delivery_duration_seconds",
			Help:    "Duration of delivery attempts, response included, by outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30, 60},
		}, []string{"outcome"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookproxy_batches_delivered_total",
			Help: "Batches acknowledged by their receivers.",
		}),
		hooks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookproxy_hooks_delivered_total",
			Help: "Hooks in the batches acknowledged by their receivers.",
		}),
		givenUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookproxy_batches_given_up_total",
			Help: "Batches given up on, by reason: moved to the dead-letter store (or discarded when HOOKPROXY_ON_GIVE_UP=discard).",
		}, []string{"reason"}),
		givenUpHooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookproxy_hooks_given_up_total",
			Help: "Hooks in the batches given up on, by reason.",
		}, []string{"reason"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hookproxy_batch_size_hooks",
			Help:    "Hooks per finished batch (delivered or given up).",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
	}
	for o, classes := range knownAttempts {
		m.attemptTime.WithLabelValues(o)
		for _, c := range classes {
			m.attempts.WithLabelValues(o, c)
		}
	}
	for _, r := range knownReasons {
		m.givenUp.WithLabelValues(r)
		m.givenUpHooks.WithLabelValues(r)
	}
	for _, r := range knownRefusals {
		m.refused.WithLabelValues(r)
	}
	m.passThrough.WithLabelValues("http")
	m.passThrough.WithLabelValues("connect")
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "hookproxy_build_info",
		Help:        "Always 1; the version label says which hookproxy runs.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	m.reg.MustRegister(
		m.captured, m.capturedBytes, m.captureTime, m.captureWaits, m.refused, m.forwarded, m.passThrough,
		m.attempts, m.attemptTime, m.batches, m.hooks, m.givenUp, m.givenUpHooks, m.batchSize,
		info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the registry that holds the metrics, for tests and for
// registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	// No HandlerOpts.Registry: it would add promhttp's own error counter,
	// which is not a hookproxy_* metric.
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A gauge the store cannot answer for is left out; the rest of
		// the scrape still counts.
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// CaptureObserved counts a captured hook; it is the proxy's OnCapture.
func (m *Metrics) CaptureObserved(h *buffer.Hook, d time.Duration) {
	m.captured.Inc()
	m.capturedBytes.Add(float64(h.Size()))
	m.captureTime.Observe(d.Seconds())
}

// CaptureWaited counts a capture that waits for room under the bound on
// the bytes being captured; it is the proxy's OnCaptureWait.
func (m *Metrics) CaptureWaited() { m.captureWaits.Inc() }

// Refused counts a hook answered without being kept; it is the proxy's
// OnRefuse.
func (m *Metrics) Refused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// Forwarded counts a hook the store could not keep, sent straight to its
// receiver; it is the proxy's OnForward.
func (m *Metrics) Forwarded() { m.forwarded.Inc() }

// PassThrough counts a forwarded request; it is the proxy's OnPassThrough.
func (m *Metrics) PassThrough(r *http.Request) {
	kind := "http"
	if r.Method == http.MethodConnect {
		kind = "connect"
	}
	m.passThrough.WithLabelValues(kind).Inc()
}

// Attempt counts a delivery attempt; it is the sender's OnAttempt.
func (m *Metrics) Attempt(outcome string, status int, d time.Duration, batchSize int) {
	m.attempts.WithLabelValues(outcome, statusClass(status)).Inc()
	m.attemptTime.WithLabelValues(outcome).Observe(d.Seconds())
}

// Delivered counts an acknowledged batch; it is the sender's OnDelivered.
func (m *Metrics) Delivered(batchSize int) {
	m.batches.Inc()
	m.hooks.Add(float64(batchSize))
	m.batchSize.Observe(float64(batchSize))
}

// GivenUp counts a batch given up on; it is the sender's OnGivenUp.
func (m *Metrics) GivenUp(reason string, batchSize int) {
	m.StoreGivenUp(reason, batchSize)
	m.batchSize.Observe(float64(batchSize))
}

// StoreGivenUp counts hooks the store itself moved to the dead-letter
// store (buffer.ReasonUnreadable: their records could not be read); it
// is the store's OnGivenUp. They were in no batch sent, so the batch
// size histogram leaves them out.
func (m *Metrics) StoreGivenUp(reason string, hooks int) {
	m.givenUp.WithLabelValues(reason).Inc()
	m.givenUpHooks.WithLabelValues(reason).Add(float64(hooks))
}

// statusClass buckets an HTTP status for a label: "2xx".."5xx", "network"
// when there was no response (status 0), "other" for anything else.
func statusClass(status int) string {
	switch {
	case status == 0:
		return "network"
	case status >= 100 && status < 600:
		return strconv.Itoa(status/100) + "xx"
	default:
		return "other"
	}
}

// stateCollector reports the store's and the sender's state at scrape
// time.
type stateCollector struct {
	s *Server

	pendingHooks, pendingBytes, pendingTargets, oldestAge, overdue *prometheus.Desc
	deadLetters, deadHooks, gone, disk, free, reserve, ready       *prometheus.Desc
}

func newStateCollector(s *Server) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &stateCollector{
		s:              s,
		pendingHooks:   d("hookproxy_pending_hooks", "Hooks captured and not yet delivered (in-flight batches included)."),
		pendingBytes:   d("hookproxy_pending_bytes", "Body bytes of the pending hooks (what HOOKPROXY_MAX_PENDING_BYTES bounds)."),
		pendingTargets: d("hookproxy_pending_targets", "Targets with pending hooks."),
		oldestAge:      d("hookproxy_oldest_pending_age_seconds", "Age of the oldest pending hook; 0 when none is pending."),
		overdue:        d("hookproxy_sender_overdue_seconds", "How long the most overdue batch has been due without an attempt; 0 when none is."),
		deadLetters:    d("hookproxy_dead_letters", "Batches in the dead-letter store."),
		deadHooks:      d("hookproxy_dead_letter_hooks", "Hooks in the dead-letter store."),
		gone:           d("hookproxy_targets_gone", "Targets marked gone (their receiver answered 410) and not cleared."),
		disk:           d("hookproxy_store_disk_bytes", "Bytes the store's files take on disk, by part (lsm, vlog).", "part"),
		free:           d("hookproxy_store_free_bytes", "Free space of the data directory's file system."),
		reserve:        d("hookproxy_store_reserve_bytes", "Free space captures leave on the data directory's file system: below it they are refused as a store error."),
		ready:          d("hookproxy_ready", "1 when /readyz answers 200, else 0."),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pendingHooks, c.pendingBytes, c.pendingTargets, c.oldestAge,
		c.overdue, c.deadLetters, c.deadHooks, c.gone, c.disk, c.free, c.reserve, c.ready} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	now := s.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := s.store.Stats()
	gauge(c.pendingHooks, float64(st.PendingHooks))
	gauge(c.pendingBytes, float64(st.PendingBytes))
	gauge(c.pendingTargets, float64(st.PendingTargets))
	gauge(c.oldestAge, ageSeconds(st.Oldest, now))
	if s.progress != nil {
		gauge(c.overdue, s.progress.OldestDue(now).Seconds())
	}
	if dead, err := s.store.DeadLetterTotals(); err == nil {
		gauge(c.deadLetters, float64(dead.Letters))
		gauge(c.deadHooks, float64(dead.Hooks))
	} else {
		ch <- prometheus.NewInvalidMetric(c.deadLetters, err)
	}
	if targets, err := s.store.Targets(); err == nil {
		n := 0
		for i := range targets {
			if targets[i].Gone {
				n++
			}
		}
		gauge(c.gone, float64(n))
	} else {
		ch <- prometheus.NewInvalidMetric(c.gone, err)
	}
	if s.diskUsage != nil {
		lsm, vlog := s.diskUsage()
		gauge(c.disk, float64(lsm), "lsm")
		gauge(c.disk, float64(vlog), "vlog")
	}
	if s.space != nil {
		if free, reserve, ok := s.space(); ok {
			gauge(c.free, float64(free))
			gauge(c.reserve, float64(reserve))
		}
	}
	ready := 0.0
	if s.readiness(now).Ready {
		ready = 1
	}
	gauge(c.ready, ready)
}

// ageSeconds is how long before now t was; 0 for the zero time.
func ageSeconds(t, now time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t), 0).Seconds()
}
