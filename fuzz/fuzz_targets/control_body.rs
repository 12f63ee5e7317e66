//! The actuator control body, HTTP and MQTT: `control::parse` (with and without the actuator from
//! the path) and `control::check_mqtt` (freshness and HMAC signature), on arbitrary bytes.
#![no_main]

use dustgate::control::{MqttPolicy, check_mqtt, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data, None, "mqtt");
    let _ = parse(data, Some("mist-cannons"), "http");
    let now_ms = 1_795_694_400_000;
    let open = MqttPolicy { max_age_ms: 300_000, hmac: None };
    let signed = MqttPolicy { max_age_ms: i64::MAX, hmac: Some("s3cret".into()) };
    let _ = check_mqtt(data, false, now_ms, &open);
    let _ = check_mqtt(data, false, i64::MIN, &signed);
    let _ = check_mqtt(data, true, now_ms, &open);
});
