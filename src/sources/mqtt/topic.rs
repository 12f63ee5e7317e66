//! MQTT topic filters: matching and levels. Pure.

/// Whether `topic` matches `filter` (`+` one level, `#` the rest, including none).
/// Topics starting with `$` match only filters that start with `$` too (MQTT 3.1.1 §4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') != filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Level `n` (0-based) of a topic, if it exists and is not empty.
pub fn level(topic: &str, n: usize) -> Option<&str> {
    topic.split('/').nth(n).filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(matches("sensors/+/telemetry", "sensors/dust-01/telemetry"));
        assert!(!matches("sensors/+/telemetry", "sensors/dust-01/status"));
        assert!(!matches("sensors/+/telemetry", "sensors/a/b/telemetry"));
        assert!(matches("sensors/#", "sensors"));
        assert!(matches("sensors/#", "sensors/a/b"));
        assert!(matches("#", "anything/at/all"));
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert_eq!(level("sensors/dust-01/telemetry", 1), Some("dust-01"));
        assert_eq!(level("sensors//telemetry", 1), None);
        assert_eq!(level("a", 3), None);
    }
}
