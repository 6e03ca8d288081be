//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines
//! (docs/decisions/0026-metrics-and-alarms.md, 0059).
//!
//! crm-core's domain code emits each [`MetricSet`] through its
//! `MetricsSink` port. In Lambda the sink is an [`EmfWriter`] over stdout:
//! one JSON document per line, from which CloudWatch Logs extracts the
//! metrics (no `PutMetricData` call, no extra permission).
//!
//! One document:
//!
//! ```json
//! {"_aws": {"Timestamp": 1764460800000,
//!           "CloudWatchMetrics": [{"Namespace": "Crm",
//!                                  "Dimensions": [["Channel"]],
//!                                  "Metrics": [{"Name": "MessagesSent", "Unit": "Count"}]}]},
//!  "Channel": "email", "MessagesSent": 1}
//! ```

use crm_core::metrics::{MetricSet, MetricsSink};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Mutex;

/// The EMF document of `set` in `namespace`: the set's fields (properties
/// first, so a property never overwrites a dimension or a metric value) and
/// the `_aws` directive that names its metrics, units and dimension set.
pub fn to_emf(set: &MetricSet, namespace: &str) -> Value {
    let mut doc = set.fields();
    let dimension_names: Vec<&str> = set.dimensions.iter().map(|(name, _)| *name).collect();
    let definitions: Vec<Value> = set
        .metrics
        .iter()
        .map(|m| json!({ "Name": m.name, "Unit": m.unit.as_str() }))
        .collect();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": set.timestamp.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimension_names],
                "Metrics": definitions,
            }],
        }),
    );
    Value::Object(doc)
}

/// Writes each set as one EMF line to a writer (stdout in Lambda).
pub struct EmfWriter {
    namespace: String,
    out: Mutex<Box<dyn Write + Send>>,
}

impl EmfWriter {
    pub fn new(namespace: impl Into<String>, out: Box<dyn Write + Send>) -> Self {
        EmfWriter {
            namespace: namespace.into(),
            out: Mutex::new(out),
        }
    }

    /// Stdout, which Lambda sends to the function's log group.
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Self::new(namespace, Box::new(std::io::stdout()))
    }

    /// The namespace from `METRICS_NAMESPACE` (blank: crm-core's
    /// `DEFAULT_NAMESPACE`).
    pub fn namespace_from(lookup: &dyn Fn(&str) -> Option<String>) -> String {
        crm_core::metrics::namespace_from(lookup)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl MetricsSink for EmfWriter {
    fn emit(&self, set: MetricSet) {
        let mut line = to_emf(&set, &self.namespace).to_string();
        line.push('\n');
        let Ok(mut out) = self.out.lock() else {
            tracing::warn!("metrics writer poisoned; metric dropped");
            return;
        };
        // One write of the whole line, so it never interleaves with log lines.
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "metric not written");
        }
    }
}

/// A writer tests can read back: clones share one buffer.
#[derive(Debug, Clone, Default)]
pub struct SharedBuffer(std::sync::Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Every complete line written so far, parsed as JSON (unparsable lines skipped).
    pub fn documents(&self) -> Vec<Value> {
        let bytes = match self.0.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut inner = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("shared buffer poisoned"))?;
        inner.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use crm_core::metrics::names;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 1, 0, 0)
            .single()
            .expect("valid time")
    }

    trait ToEmf {
        fn to_emf_in(&self, namespace: &str) -> Value;
    }

    impl ToEmf for MetricSet {
        fn to_emf_in(&self, namespace: &str) -> Value {
            to_emf(self, namespace)
        }
    }

    #[test]
    fn a_set_becomes_an_emf_document() {
        let doc = MetricSet::new(at())
            .dimension("Channel", "email")
            .count(names::MESSAGES_SUPPRESSED, 1)
            .property("Reason", "no_consent")
            .to_emf_in("Crm");
        let aws = &doc["_aws"];
        assert_eq!(aws["Timestamp"], json!(at().timestamp_millis()));
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(aws["CloudWatchMetrics"].as_array().map(Vec::len), Some(1));
        assert_eq!(directive["Namespace"], "Crm");
        assert_eq!(directive["Dimensions"], json!([["Channel"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{ "Name": "MessagesSuppressed", "Unit": "Count" }])
        );
        assert_eq!(doc["Channel"], "email");
        assert_eq!(doc["MessagesSuppressed"], json!(1.0));
        assert_eq!(doc["Reason"], "no_consent");
    }

    #[test]
    fn every_metric_and_dimension_has_its_value_at_the_top_level() {
        let doc = MetricSet::new(at())
            .dimension("Consumer", "relay")
            .millis(names::CONSUMER_LAG, 1500)
            .count(names::EVENTS_RELAYED, 42)
            .to_emf_in("Shop/Crm");
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Shop/Crm");
        let defined: Vec<&str> = directive["Metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["Name"].as_str())
            .collect();
        assert_eq!(defined, vec!["ConsumerLag", "EventsRelayed"]);
        assert_eq!(directive["Metrics"][0]["Unit"], "Milliseconds");
        assert_eq!(doc["ConsumerLag"], json!(1500.0));
        assert_eq!(doc["EventsRelayed"], json!(42.0));
        for dimension_set in directive["Dimensions"].as_array().into_iter().flatten() {
            for name in dimension_set.as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                assert!(doc[name].is_string(), "dimension {name} has no value");
            }
        }
    }

    #[test]
    fn a_negative_lag_is_clamped_to_zero() {
        let doc = MetricSet::new(at()).millis(names::CONSUMER_LAG, -20).to_emf_in("Crm");
        assert_eq!(doc["ConsumerLag"], json!(0.0));
    }

    #[test]
    fn a_property_cannot_overwrite_a_metric_value() {
        let doc = MetricSet::new(at())
            .count(names::MESSAGES_SENT, 1)
            .property(names::MESSAGES_SENT, "oops")
            .to_emf_in("Crm");
        assert_eq!(doc["MessagesSent"], json!(1.0));
    }

    #[test]
    fn the_writer_writes_one_line_per_set() {
        let buffer = SharedBuffer::default();
        let writer = EmfWriter::new("Crm", Box::new(buffer.clone()));
        writer.emit(
            MetricSet::new(at())
                .dimension("Channel", "sms")
                .count(names::MESSAGES_SENT, 1),
        );
        writer.emit(
            MetricSet::new(at())
                .dimension("Channel", "push")
                .count(names::MESSAGES_SENT, 1),
        );
        let docs = buffer.documents();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["Channel"], "sms");
        assert_eq!(docs[1]["Channel"], "push");
        assert_eq!(docs[1]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Crm");
    }

    #[test]
    fn the_namespace_comes_from_the_environment() {
        assert_eq!(EmfWriter::namespace_from(&|_| None), "Crm");
        assert_eq!(
            EmfWriter::namespace_from(&|name| (name == "METRICS_NAMESPACE").then(|| "Shop".into())),
            "Shop"
        );
    }
}
