//! What HTTP sees of the gateway: read-only questions about the site now.

use std::sync::Arc;

use crate::health::Health;
use crate::outputs::queue::Depth;
use crate::pipeline::actuate::ActuatorStatus;
use crate::pipeline::alerts::Locale;
use crate::pipeline::aqi::AqiNow;
use crate::pipeline::compliance::ItemFigures;
use crate::pipeline::rules::{AlertEvent, Limit};

pub trait SiteView: Send + Sync {
    /// The counters of the sources, the core and the writers.
    fn health(&self) -> &Arc<Health>;
    /// What waits in the store for the writer.
    fn depth(&self) -> Depth;
    /// Points the store deleted on purpose because it was full.
    fn dropped_points(&self) -> u64;
    /// The alerts open now.
    fn open_alerts(&self) -> Vec<AlertEvent>;
    /// The alerts open now as the contract's alert JSON, messages in `locale` (the site's
    /// alert language when `None`).
    fn open_alerts_json(&self, locale: Option<Locale>) -> Vec<serde_json::Value>;
    /// The limit in force now for a device's metric.
    fn limit_in_force(&self, device: &str, metric: &str, now_ms: i64) -> Option<Limit>;
    /// Today's six-100% figures and the paving declaration's date.
    fn compliance_today(&self) -> Option<([ItemFigures; 6], Option<String>)>;
    fn actuators(&self) -> Vec<ActuatorStatus>;
    /// Every device's AQI as last written to the `aqi` measurement, by device id.
    fn aqi_now(&self) -> Vec<(String, AqiNow)>;
}
