//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines
//! (docs/decisions/0026-metrics-and-alarms.md).
//!
//! Domain code records what happened through a [`MetricsSink`]; it does not
//! know where the numbers go. In Lambda the sink is an [`EmfWriter`] over
//! stdout: one JSON document per line, from which CloudWatch Logs extracts the
//! metrics (no `PutMetricData` call, no extra permission). Locally and in
//! tests the default is [`NoMetrics`], or an [`EmfWriter`] over a buffer.
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

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::sync::Mutex;

/// The namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "Crm";

/// The metric names, shared by the emitters, the tests and the dashboard in
/// template.yaml.
pub mod names {
    /// A message handed to its provider (dimension `Channel`).
    pub const MESSAGES_SENT: &str = "MessagesSent";
    /// A message not sent: no consent, suppressed address, caps... (dimension
    /// `Channel`; the reason is a property).
    pub const MESSAGES_SUPPRESSED: &str = "MessagesSuppressed";
    /// A message put off to later: quiet hours, caps window (dimension `Channel`).
    pub const MESSAGES_DEFERRED: &str = "MessagesDeferred";
    /// A message that failed for good (dimension `Channel`).
    pub const MESSAGES_FAILED: &str = "MessagesFailed";
    /// How late a consumer is (dimension `Consumer`): for the relay, the age
    /// of the oldest stream record of a batch; for the bus consumers, the age
    /// of the event (since `recorded_at`) when it was handled.
    pub const CONSUMER_LAG: &str = "ConsumerLag";
    /// Events published onto the bus by the relay (dimension `Consumer`).
    pub const EVENTS_RELAYED: &str = "EventsRelayed";
}

/// The units this project uses (CloudWatch's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
}

/// Metrics that share a timestamp and dimensions: one EMF document.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSet {
    pub timestamp: DateTime<Utc>,
    /// Name and value of each dimension; together they are the one dimension set.
    pub dimensions: Vec<(&'static str, String)>,
    pub metrics: Vec<Metric>,
    /// Extra fields of the log line (searchable in Logs Insights, not metrics).
    pub properties: Vec<(&'static str, String)>,
}

impl MetricSet {
    pub fn new(timestamp: DateTime<Utc>) -> Self {
        MetricSet {
            timestamp,
            dimensions: Vec::new(),
            metrics: Vec::new(),
            properties: Vec::new(),
        }
    }

    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    pub fn count(self, name: &'static str, value: u64) -> Self {
        self.metric(name, Unit::Count, value as f64)
    }

    pub fn millis(self, name: &'static str, value: i64) -> Self {
        self.metric(name, Unit::Milliseconds, value.max(0) as f64)
    }

    pub fn metric(mut self, name: &'static str, unit: Unit, value: f64) -> Self {
        self.metrics.push(Metric { name, unit, value });
        self
    }

    pub fn property(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.properties.push((name, value.into()));
        self
    }

    /// The EMF document of this set in `namespace`. Properties come first, so
    /// a property can never overwrite a dimension or a metric value.
    pub fn to_emf(&self, namespace: &str) -> Value {
        let mut doc = Map::new();
        for (name, value) in &self.properties {
            doc.insert((*name).to_string(), Value::String(value.clone()));
        }
        for (name, value) in &self.dimensions {
            doc.insert((*name).to_string(), Value::String(value.clone()));
        }
        for metric in &self.metrics {
            doc.insert(metric.name.to_string(), json!(metric.value));
        }
        let dimension_names: Vec<&str> = self.dimensions.iter().map(|(name, _)| *name).collect();
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|m| json!({ "Name": m.name, "Unit": m.unit.as_str() }))
            .collect();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.timestamp.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [dimension_names],
                    "Metrics": definitions,
                }],
            }),
        );
        Value::Object(doc)
    }
}

/// Where metrics go. Emitting never fails the caller: a lost metric is
/// logged, not an error of the business operation.
pub trait MetricsSink: Send + Sync {
    fn emit(&self, set: MetricSet);
}

/// Drops every metric (the local runtime, tests that do not look).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl MetricsSink for NoMetrics {
    fn emit(&self, _set: MetricSet) {}
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

    /// The namespace from `METRICS_NAMESPACE` (blank: [`DEFAULT_NAMESPACE`]).
    pub fn namespace_from(lookup: &dyn Fn(&str) -> Option<String>) -> String {
        lookup("METRICS_NAMESPACE")
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl MetricsSink for EmfWriter {
    fn emit(&self, set: MetricSet) {
        let mut line = set.to_emf(&self.namespace).to_string();
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

/// A consumer (an [`EventHandler`](crate::consumer::EventHandler)) that
/// reports how late it handled each event: `ConsumerLag` = when it was
/// handled minus the event's `recorded_at`, dimension `Consumer` (the
/// function's name). Only events handled without error count; a failing
/// consumer shows in its errors and dead letters instead.
pub struct MeteredHandler<H> {
    inner: H,
    metrics: std::sync::Arc<dyn MetricsSink>,
}

impl<H> MeteredHandler<H> {
    pub fn new(inner: H, metrics: std::sync::Arc<dyn MetricsSink>) -> Self {
        MeteredHandler { inner, metrics }
    }

    pub fn inner(&self) -> &H {
        &self.inner
    }
}

#[async_trait::async_trait]
impl<H: crate::consumer::EventHandler> crate::consumer::EventHandler for MeteredHandler<H> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        self.inner.consumer_names()
    }

    async fn handle(
        &self,
        event: &crate::event::EventEnvelope,
        now: DateTime<Utc>,
    ) -> Result<crate::consumer::GroupOutcome, crate::consumer::ConsumeError> {
        let outcome = self.inner.handle(event, now).await?;
        self.emit_lag(event, now);
        Ok(outcome)
    }

    async fn handle_page(
        &self,
        events: &[crate::event::EventEnvelope],
        now: DateTime<Utc>,
    ) -> Result<crate::consumer::PageOutcome, crate::consumer::ConsumeError> {
        let outcome = self.inner.handle_page(events, now).await?;
        for event in events {
            self.emit_lag(event, now);
        }
        Ok(outcome)
    }
}

impl<H: crate::consumer::EventHandler> MeteredHandler<H> {
    fn emit_lag(&self, event: &crate::event::EventEnvelope, now: DateTime<Utc>) {
        self.metrics.emit(
            MetricSet::new(now)
                .dimension("Consumer", self.inner.name())
                .millis(names::CONSUMER_LAG, (now - event.recorded_at).num_milliseconds())
                .property("EventType", event.event_type.clone()),
        );
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
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 1, 0, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn a_set_becomes_an_emf_document() {
        let doc = MetricSet::new(at())
            .dimension("Channel", "email")
            .count(names::MESSAGES_SUPPRESSED, 1)
            .property("Reason", "no_consent")
            .to_emf("Crm");
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
            .to_emf("Shop/Crm");
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
        let doc = MetricSet::new(at()).millis(names::CONSUMER_LAG, -20).to_emf("Crm");
        assert_eq!(doc["ConsumerLag"], json!(0.0));
    }

    #[test]
    fn a_property_cannot_overwrite_a_metric_value() {
        let doc = MetricSet::new(at())
            .count(names::MESSAGES_SENT, 1)
            .property(names::MESSAGES_SENT, "oops")
            .to_emf("Crm");
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

    struct Handler {
        fail: bool,
    }

    #[async_trait::async_trait]
    impl crate::consumer::EventHandler for Handler {
        fn name(&self) -> &'static str {
            "projector"
        }
        fn consumer_names(&self) -> Vec<&'static str> {
            vec!["customer-360"]
        }
        async fn handle(
            &self,
            _event: &crate::event::EventEnvelope,
            _now: DateTime<Utc>,
        ) -> Result<crate::consumer::GroupOutcome, crate::consumer::ConsumeError> {
            if self.fail {
                return Err(crate::consumer::ConsumeError::Retryable {
                    consumer: "customer-360",
                    message: "store down".into(),
                });
            }
            Ok(crate::consumer::GroupOutcome {
                applied: vec!["customer-360"],
                duplicates: Vec::new(),
                parked: Vec::new(),
            })
        }

        async fn handle_page(
            &self,
            events: &[crate::event::EventEnvelope],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<crate::consumer::PageOutcome, crate::consumer::ConsumeError> {
            crate::consumer::handle_each(self, events, now).await
        }
    }

    #[tokio::test]
    async fn a_metered_consumer_reports_how_late_it_handled_each_event() {
        use crate::consumer::EventHandler;
        let buffer = SharedBuffer::default();
        let sink: std::sync::Arc<dyn MetricsSink> =
            std::sync::Arc::new(EmfWriter::new("Crm", Box::new(buffer.clone())));
        let mut event = crate::testing::raw_event("customer-1", "CustomerRegistered", json!({}));
        event.recorded_at = at() - chrono::Duration::milliseconds(2500);
        let metered = MeteredHandler::new(Handler { fail: false }, sink.clone());
        assert_eq!(metered.name(), "projector");
        assert_eq!(metered.consumer_names(), vec!["customer-360"]);
        let outcome = metered.handle(&event, at()).await.expect("handled");
        assert_eq!(outcome.applied, vec!["customer-360"]);
        let failing = MeteredHandler::new(Handler { fail: true }, sink);
        assert!(failing.handle(&event, at()).await.is_err());
        let docs = buffer.documents();
        assert_eq!(docs.len(), 1, "only the handled event counts: {docs:?}");
        assert_eq!(docs[0]["Consumer"], "projector");
        assert_eq!(docs[0]["ConsumerLag"], json!(2500.0));
        assert_eq!(docs[0]["EventType"], "CustomerRegistered");
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{ "Name": "ConsumerLag", "Unit": "Milliseconds" }])
        );
    }

    /// template.yaml (decision 0026): every dead-letter queue and every
    /// function has its alarms, the relay's iterator age too, the emitting
    /// functions get the namespace, and the dashboard charts these metrics.
    #[test]
    fn the_template_alarms_on_every_queue_and_function_and_charts_the_metrics() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let text = std::fs::read_to_string(&path).expect("template.yaml is readable");
        let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("template.yaml parses");
        let resources = template["Resources"].as_mapping().expect("Resources");
        let of_type = |wanted: &str| -> Vec<String> {
            resources
                .iter()
                .filter(|(_, r)| r["Type"].as_str() == Some(wanted))
                .filter_map(|(name, _)| name.as_str().map(str::to_string))
                .collect()
        };
        let alarms: Vec<&serde_yaml::Value> = resources
            .values()
            .filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
            .map(|r| &r["Properties"])
            .collect();
        // The logical id an alarm's first dimension refers to (!Ref X or !GetAtt X.QueueName).
        let subject = |alarm: &serde_yaml::Value| -> Option<String> {
            match &alarm["Dimensions"][0]["Value"] {
                serde_yaml::Value::Tagged(tagged) => tagged
                    .value
                    .as_str()
                    .map(|v| v.trim_end_matches(".QueueName").to_string()),
                _ => None,
            }
        };
        let has_alarm = |metric: &str, of: &str| {
            alarms
                .iter()
                .any(|a| a["MetricName"].as_str() == Some(metric) && subject(a).as_deref() == Some(of))
        };
        // The queues functions read (decision 0029): an alarm when they fall
        // behind. Every other queue is a dead-letter queue: an alarm on the
        // first message.
        let read_by_functions: Vec<String> = resources
            .values()
            .filter(|r| r["Type"].as_str() == Some("AWS::Serverless::Function"))
            .filter_map(|r| r["Properties"]["Events"].as_mapping())
            .flat_map(|events| events.values())
            .filter(|event| event["Type"].as_str() == Some("SQS"))
            .filter_map(|event| match &event["Properties"]["Queue"] {
                serde_yaml::Value::Tagged(tagged) => {
                    tagged.value.as_str().map(|v| v.trim_end_matches(".Arn").to_string())
                }
                _ => None,
            })
            .collect();
        assert!(read_by_functions.len() >= 4, "{read_by_functions:?}");
        let queues = of_type("AWS::SQS::Queue");
        assert!(queues.len() >= 11, "{queues:?}");
        for queue in &queues {
            let metric = if read_by_functions.contains(queue) {
                "ApproximateAgeOfOldestMessage"
            } else {
                "ApproximateNumberOfMessagesVisible"
            };
            assert!(has_alarm(metric, queue), "{queue} has no {metric} alarm");
        }
        let functions = of_type("AWS::Serverless::Function");
        assert!(functions.len() >= 7, "{functions:?}");
        for function in &functions {
            for metric in ["Errors", "Throttles"] {
                assert!(has_alarm(metric, function), "{function} has no {metric} alarm");
            }
        }
        assert!(has_alarm("IteratorAge", "RelayFunction"));
        for function in [
            "RelayFunction",
            "ChannelFunction",
            "ProjectorFunction",
            "ConsentFunction",
        ] {
            let variables = &resources[function]["Properties"]["Environment"]["Variables"];
            assert!(
                !variables["METRICS_NAMESPACE"].is_null(),
                "{function} has no METRICS_NAMESPACE"
            );
        }
        assert_eq!(
            template["Parameters"]["MetricsNamespace"]["Default"].as_str(),
            Some(DEFAULT_NAMESPACE)
        );
        let dashboard = resources
            .values()
            .find(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Dashboard"))
            .expect("a dashboard");
        let body = match &dashboard["Properties"]["DashboardBody"] {
            serde_yaml::Value::Tagged(tagged) => tagged.value.as_str().unwrap_or_default().to_string(),
            other => other.as_str().unwrap_or_default().to_string(),
        };
        // Valid JSON once the substitutions are made.
        let substituted = body.replace("${", "{");
        let parsed: Value = serde_json::from_str(&substituted).expect("the dashboard body is JSON");
        assert!(parsed["widgets"].as_array().is_some_and(|w| !w.is_empty()));
        for name in [
            names::MESSAGES_SENT,
            names::MESSAGES_SUPPRESSED,
            names::MESSAGES_DEFERRED,
            names::CONSUMER_LAG,
            "IteratorAge",
            "ApproximateNumberOfMessagesVisible",
        ] {
            assert!(body.contains(&format!("\"{name}\"")), "the dashboard has no {name}");
        }
        assert!(body.contains("${MetricsNamespace}"));
    }

    #[test]
    fn the_namespace_comes_from_the_environment() {
        assert_eq!(EmfWriter::namespace_from(&|_| None), "Crm");
        assert_eq!(EmfWriter::namespace_from(&|_| Some("  ".into())), "Crm");
        assert_eq!(
            EmfWriter::namespace_from(&|name| (name == "METRICS_NAMESPACE").then(|| "Shop".into())),
            "Shop"
        );
    }
}
