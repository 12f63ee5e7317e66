//! The MQTT JSON mapping: a payload mapped with one of the built-in JSON profiles, chosen by the
//! first input byte together with how the device id is found; the rest is the payload.
#![no_main]

use std::sync::{Arc, OnceLock};

use dustgate::config::{
    Diagnostics, DeviceFrom, Subscription, json_profile::JsonProfile, profile::ProfileLoader,
};
use dustgate::sources::mqtt::mapping::map;
use libfuzzer_sys::fuzz_target;

const PROFILES: [&str; 6] = [
    "json-dust-monitor",
    "json-water-probe",
    "ai-detector",
    "gate-camera",
    "site-activity",
    "wash-station",
];

fn profiles() -> &'static Vec<Arc<JsonProfile>> {
    static P: OnceLock<Vec<Arc<JsonProfile>>> = OnceLock::new();
    P.get_or_init(|| {
        let mut loader = ProfileLoader::new(vec![]);
        let mut diags = Diagnostics::default();
        let v: Vec<_> = PROFILES
            .iter()
            .filter_map(|n| loader.load_json(n, &mut diags).ok())
            .collect();
        assert_eq!(v.len(), PROFILES.len(), "built-in JSON profiles: {diags}");
        v
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let all = profiles();
    let profile = all[usize::from(sel & 0x07) % all.len()].clone();
    let device = match (sel >> 3) & 0x03 {
        0 => DeviceFrom::TopicLevel(1),
        1 => DeviceFrom::Pointer("/id".into()),
        2 => DeviceFrom::Pointer("/device/0".into()),
        _ => DeviceFrom::Fixed("dust-01".into()),
    };
    let sub = Subscription {
        topic: "sensors/+/telemetry".into(),
        filter: "sensors/+/telemetry".into(),
        device,
        profile,
        qos: 1,
        max_devices: 1000,
    };
    let received_ms = if sel & 0x20 != 0 { 1_795_694_400_000 } else { 0 };
    let _ = map(&sub, "sensors/d1/telemetry", payload, received_ms);
});
