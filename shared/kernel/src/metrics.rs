//! The metrics port (docs/decisions/0026-metrics-and-alarms.md, 0059).
//!
//! Domain code records what happened as a [`MetricSet`] (a timestamp,
//! dimensions, named values with a unit, and searchable properties) through
//! a [`MetricsSink`]; it does not know where the numbers go. In Lambda the
//! sink is crm-aws's `emf::EmfWriter`, which writes each set as one
//! CloudWatch Embedded Metric Format line to stdout. Locally the sink is
//! [`NoMetrics`]; tests that read the metrics back use [`RecordedMetrics`].

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
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

    /// The values of this set as named fields, as a log line carries them:
    /// each property, dimension and metric value under its name. Properties
    /// come first, so a property can never overwrite a dimension or a metric
    /// value. A sink adds its own framing (crm-aws's EMF writer adds the
    /// `_aws` directive).
    pub fn fields(&self) -> Map<String, Value> {
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
        doc
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

/// The namespace of the metrics from `METRICS_NAMESPACE` (blank or unset:
/// [`DEFAULT_NAMESPACE`]).
pub fn namespace_from(lookup: &dyn Fn(&str) -> Option<String>) -> String {
    lookup("METRICS_NAMESPACE")
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
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

    async fn handle_for(
        &self,
        consumer: &str,
        event: &crate::event::EventEnvelope,
        now: DateTime<Utc>,
    ) -> Result<crate::consumer::GroupOutcome, crate::consumer::ConsumeError> {
        self.inner.handle_for(consumer, event, now).await
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

/// A sink that keeps every set, for tests that read the metrics back:
/// clones share one record.
#[derive(Debug, Clone, Default)]
pub struct RecordedMetrics(std::sync::Arc<Mutex<Vec<MetricSet>>>);

impl RecordedMetrics {
    /// Every set emitted so far, in order.
    pub fn sets(&self) -> Vec<MetricSet> {
        match self.0.lock() {
            Ok(sets) => sets.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Every set emitted so far as its [`MetricSet::fields`].
    pub fn documents(&self) -> Vec<Value> {
        self.sets().iter().map(|set| Value::Object(set.fields())).collect()
    }
}

impl MetricsSink for RecordedMetrics {
    fn emit(&self, set: MetricSet) {
        match self.0.lock() {
            Ok(mut sets) => sets.push(set),
            Err(poisoned) => poisoned.into_inner().push(set),
        }
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
    fn a_sets_fields_hold_every_value_and_a_property_cannot_overwrite_one() {
        let fields = MetricSet::new(at())
            .dimension("Channel", "email")
            .count(names::MESSAGES_SENT, 1)
            .millis(names::CONSUMER_LAG, -20)
            .property("Reason", "no_consent")
            .property(names::MESSAGES_SENT, "oops")
            .property("Channel", "sms")
            .fields();
        assert_eq!(fields["Channel"], "email");
        assert_eq!(fields["MessagesSent"], json!(1.0));
        assert_eq!(fields["ConsumerLag"], json!(0.0), "a negative lag is clamped to zero");
        assert_eq!(fields["Reason"], "no_consent");
        assert_eq!(fields.len(), 4, "{fields:?}");
    }

    #[test]
    fn recorded_metrics_keep_every_set_in_order() {
        let recorded = RecordedMetrics::default();
        let sink: &dyn MetricsSink = &recorded.clone();
        sink.emit(
            MetricSet::new(at())
                .dimension("Channel", "sms")
                .count(names::MESSAGES_SENT, 1),
        );
        sink.emit(
            MetricSet::new(at())
                .dimension("Channel", "push")
                .count(names::MESSAGES_SENT, 1),
        );
        let sets = recorded.sets();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[1].dimensions, vec![("Channel", "push".to_string())]);
        assert_eq!(recorded.documents()[0]["Channel"], "sms");
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
                return Err(crate::consumer::ConsumeError::retry(
                    "customer-360",
                    crate::ports::StoreError::Unavailable("store down".into()),
                ));
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
        let recorded = RecordedMetrics::default();
        let sink: std::sync::Arc<dyn MetricsSink> = std::sync::Arc::new(recorded.clone());
        let mut event = crate::testing::raw_event("customer-1", "CustomerRegistered", json!({}));
        event.recorded_at = at() - chrono::Duration::milliseconds(2500);
        let metered = MeteredHandler::new(Handler { fail: false }, sink.clone());
        assert_eq!(metered.name(), "projector");
        assert_eq!(metered.consumer_names(), vec!["customer-360"]);
        let outcome = metered.handle(&event, at()).await.expect("handled");
        assert_eq!(outcome.applied, vec!["customer-360"]);
        let failing = MeteredHandler::new(Handler { fail: true }, sink);
        assert!(failing.handle(&event, at()).await.is_err());
        let sets = recorded.sets();
        assert_eq!(sets.len(), 1, "only the handled event counts: {sets:?}");
        assert_eq!(sets[0].dimensions, vec![("Consumer", "projector".to_string())]);
        assert_eq!(
            sets[0].metrics,
            vec![Metric {
                name: names::CONSUMER_LAG,
                unit: Unit::Milliseconds,
                value: 2500.0
            }]
        );
        assert_eq!(
            sets[0].properties,
            vec![("EventType", "CustomerRegistered".to_string())]
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
        assert_eq!(namespace_from(&|_| None), "Crm");
        assert_eq!(namespace_from(&|_| Some("  ".into())), "Crm");
        assert_eq!(
            namespace_from(&|name| (name == "METRICS_NAMESPACE").then(|| "Shop".into())),
            "Shop"
        );
    }
}
