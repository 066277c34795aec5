//! Prometheus metrics of this node: attempts by outcome and class, retry wake-up lateness,
//! claim duration, and (set at scrape time from the store) jobs by state and queue depth.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use retryd_core::JobState;
use std::collections::BTreeMap;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    attempts: Family<Labels, Counter>,
    retry_lateness: Histogram,
    claim_duration: Histogram,
    jobs: Family<Labels, Gauge>,
    queue_depth: Family<Labels, Gauge>,
    circuits: Family<Labels, Gauge>,
    deliveries: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("retryd");
        let attempts = Family::<Labels, Counter>::default();
        registry.register(
            "attempts",
            "Attempts finished on this node, by outcome and class",
            attempts.clone(),
        );
        // 0.5 ms to ~8 s: the interesting range for a timer-driven wake-up.
        let retry_lateness = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        registry.register(
            "retry_lateness_seconds",
            "How long after its due time a retry started on this node",
            retry_lateness.clone(),
        );
        let claim_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "claim_duration_seconds",
            "Duration of one claim round trip to the store",
            claim_duration.clone(),
        );
        let jobs = Family::<Labels, Gauge>::default();
        registry.register("jobs", "Jobs in the store, by state", jobs.clone());
        let queue_depth = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Waiting jobs (pending or retrying), by queue",
            queue_depth.clone(),
        );
        let circuits = Family::<Labels, Gauge>::default();
        registry.register(
            "circuit_open",
            "Circuits not closed, by target and state (open, half_open): 1 while so",
            circuits.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "notification_deliveries",
            "Notification delivery tries on this node, by sink and outcome",
            deliveries.clone(),
        );
        Metrics {
            registry,
            circuits,
            deliveries,
            attempts,
            retry_lateness,
            claim_duration,
            jobs,
            queue_depth,
        }
    }
}

impl Metrics {
    pub fn attempt_finished(&self, outcome: &str, class: Option<&str>) {
        let labels = vec![
            ("outcome", outcome.to_owned()),
            ("class", class.unwrap_or("none").to_owned()),
        ];
        self.attempts.get_or_create(&labels).inc();
    }

    pub fn retry_started_late(&self, seconds: f64) {
        self.retry_lateness.observe(seconds.max(0.0));
    }

    pub fn delivery_tried(&self, sink: &str, outcome: &str) {
        let labels = vec![("sink", sink.to_owned()), ("outcome", outcome.to_owned())];
        self.deliveries.get_or_create(&labels).inc();
    }

    /// Sets the circuit gauges from the store's circuits (call before `render`).
    pub fn set_circuits(
        &self,
        circuits: &[retryd_store::Circuit],
        now: chrono::DateTime<chrono::Utc>,
    ) {
        // Circuits close and vanish: start from none.
        self.circuits.clear();
        for circuit in circuits {
            let labels = vec![
                ("target", circuit.target.clone()),
                ("state", circuit.state(now).as_str().to_owned()),
            ];
            self.circuits.get_or_create(&labels).set(1);
        }
    }

    pub fn claimed_in(&self, seconds: f64) {
        self.claim_duration.observe(seconds);
    }

    /// Renders the text exposition, with the store's counts as of now.
    pub fn render(
        &self,
        by_state: &BTreeMap<JobState, u64>,
        depths: &BTreeMap<String, u64>,
    ) -> String {
        for state in JobState::ALL {
            let count = by_state.get(&state).copied().unwrap_or(0);
            self.jobs
                .get_or_create(&vec![("state", state.as_str().to_owned())])
                .set(count as i64);
        }
        // Queues come and go: start from none, so that an emptied queue is not left behind.
        self.queue_depth.clear();
        for (queue, depth) in depths {
            self.queue_depth
                .get_or_create(&vec![("queue", queue.clone())])
                .set(*depth as i64);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
