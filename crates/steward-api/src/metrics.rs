//! Prometheus metrics served at `/metrics`: requests by route and status, latency histograms,
//! store errors, and the seal state. Names end in `_total` / `_seconds`.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
    pub check_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub check: String,
    pub phase: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// All metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub store_errors: Counter,
    pub sealed: Gauge<i64, AtomicI64>,
    /// Configured rotations by state (idle, rotating, retiring); set when scraped.
    pub rotations: Family<StateLabels, Gauge<i64, AtomicI64>>,
    /// Rotations finished and failed since the configs were made (sums over secrets).
    pub rotations_done: Gauge<i64, AtomicI64>,
    pub rotations_failed: Gauge<i64, AtomicI64>,
    /// Alerts by state (firing, pending, suppressed); set when scraped.
    pub alerts: Family<StateLabels, Gauge<i64, AtomicI64>>,
    pub alert_groups: Gauge<i64, AtomicI64>,
    /// Notification attempts by outcome (sent, retry, dead) since start.
    pub notifications: Family<StateLabels, Gauge<i64, AtomicI64>>,
    /// Notifications waiting in the outbox, and in the dead letters.
    pub outbox: Family<StateLabels, Gauge<i64, AtomicI64>>,
    /// Per check: 1 up, 0 down (absent until its first run); the last run's duration,
    /// its phases, and the certificate expiry when the probe reports one.
    pub check_up: Family<CheckLabels, Gauge<i64, AtomicI64>>,
    pub check_duration: Family<CheckLabels, FloatGauge>,
    pub check_phase: Family<PhaseLabels, FloatGauge>,
    pub check_cert_expiry: Family<CheckLabels, FloatGauge>,
    /// Checks by state (up, down, unknown).
    pub checks: Family<StateLabels, Gauge<i64, AtomicI64>>,
    pub check_runs: Gauge<i64, AtomicI64>,
    pub check_missed: Gauge<i64, AtomicI64>,
    pub check_lag_p50: FloatGauge,
    pub check_lag_p99: FloatGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("steward");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        let store_errors = Counter::default();
        let sealed = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "store_errors",
            "Requests answered 503 because the store was unavailable",
            store_errors.clone(),
        );
        registry.register("sealed", "1 while the server is sealed", sealed.clone());
        let rotations = Family::<StateLabels, Gauge<i64, AtomicI64>>::default();
        let rotations_done = Gauge::<i64, AtomicI64>::default();
        let rotations_failed = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "rotations",
            "Secrets with a rotation config, by state (idle, rotating, retiring)",
            rotations.clone(),
        );
        registry.register(
            "rotations_completed",
            "Rotations that finished, summed over the configured secrets",
            rotations_done.clone(),
        );
        registry.register(
            "rotations_failed",
            "Rotations that failed after their last attempt, summed over the configured secrets",
            rotations_failed.clone(),
        );
        let alerts = Family::<StateLabels, Gauge<i64, AtomicI64>>::default();
        let alert_groups = Gauge::<i64, AtomicI64>::default();
        let notifications = Family::<StateLabels, Gauge<i64, AtomicI64>>::default();
        let outbox = Family::<StateLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "alerts",
            "Alerts by state (firing, pending, suppressed)",
            alerts.clone(),
        );
        registry.register("alert_groups", "Aggregation groups", alert_groups.clone());
        registry.register(
            "notification_attempts",
            "Notification attempts since start, by outcome (sent, retry, dead)",
            notifications.clone(),
        );
        registry.register(
            "notifications_queued",
            "Notifications stored and not yet delivered (state pending) or given up on (state dead)",
            outbox.clone(),
        );
        let check_up = Family::<CheckLabels, Gauge<i64, AtomicI64>>::default();
        let check_duration = Family::<CheckLabels, FloatGauge>::default();
        let check_phase = Family::<PhaseLabels, FloatGauge>::default();
        let check_cert_expiry = Family::<CheckLabels, FloatGauge>::default();
        let checks = Family::<StateLabels, Gauge<i64, AtomicI64>>::default();
        let check_runs = Gauge::<i64, AtomicI64>::default();
        let check_missed = Gauge::<i64, AtomicI64>::default();
        let check_lag_p50 = FloatGauge::default();
        let check_lag_p99 = FloatGauge::default();
        registry.register(
            "check_up",
            "1 when the check is up, 0 when down (by its condition and fail_after/recover_after)",
            check_up.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "How long the check's last run took",
            check_duration.clone(),
        );
        registry.register(
            "check_phase_duration_seconds",
            "The check's last run, by phase (dns, connect, tls, first_byte, query, ...)",
            check_phase.clone(),
        );
        registry.register(
            "check_cert_expiry_seconds",
            "Seconds until the certificate the check saw expires",
            check_cert_expiry.clone(),
        );
        registry.register(
            "checks",
            "Checks by state (up, down, unknown)",
            checks.clone(),
        );
        registry.register("check_runs", "Check runs since start", check_runs.clone());
        registry.register(
            "check_missed_runs",
            "Scheduled runs skipped because the previous one could not start in time",
            check_missed.clone(),
        );
        registry.register(
            "check_schedule_lag_p50_seconds",
            "Median time from when a check run was due to when it started, since start",
            check_lag_p50.clone(),
        );
        registry.register(
            "check_schedule_lag_p99_seconds",
            "99th percentile of the time from when a check run was due to when it started",
            check_lag_p99.clone(),
        );
        Self {
            check_up,
            check_duration,
            check_phase,
            check_cert_expiry,
            checks,
            check_runs,
            check_missed,
            check_lag_p50,
            check_lag_p99,
            alerts,
            alert_groups,
            notifications,
            outbox,
            registry,
            requests,
            latency,
            store_errors,
            sealed,
            rotations,
            rotations_done,
            rotations_failed,
        }
    }
}

/// Sets one state's gauge in a by-state family.
pub(crate) fn set_state(f: &Family<StateLabels, Gauge<i64, AtomicI64>>, state: &str, n: u64) {
    f.get_or_create(&StateLabels {
        state: state.into(),
    })
    .set(n as i64);
}

impl Metrics {
    /// The OpenMetrics text format (what `prometheus-client` writes).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The Prometheus text format 0.0.4: OpenMetrics names a counter's family without
    /// `_total` (`# TYPE steward_http_requests counter`) while its samples carry it; the
    /// older format wants the family named as the samples, and has no `# EOF` or `# UNIT`.
    pub fn render(&self) -> String {
        to_prometheus_text(&self.render_openmetrics())
    }
}

/// Converts OpenMetrics text into the Prometheus text format 0.0.4 (see [`Metrics::render`]).
pub fn to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        if let Some((prefix, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or_default();
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_their_samples_in_the_prometheus_format() {
        let om =
            "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 3\n\
                  # HELP b Up.\n# TYPE b gauge\nb 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 3\n\
             # HELP b Up.\n# TYPE b gauge\nb 1\n"
        );
    }
}
