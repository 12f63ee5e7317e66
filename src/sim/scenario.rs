//! The demo site: which simulated devices it has, and how their values move over a day.
//!
//! Values follow the shape of a real site's day (a morning and an evening dust peak with
//! traffic and earthwork, loud days and quiet nights, warmer afternoons) with a random walk on
//! top, so the dashboards look like a site and not like a sine wave.

use std::collections::HashMap;

use crate::rand::Jitter;

/// A simulated device of the demo site.
#[derive(Debug, Clone, Copy)]
pub struct DemoDevice {
    pub id: &'static str,
    pub unit: u8,
    pub profile: &'static str,
}

pub const DEVICES: &[DemoDevice] = &[
    DemoDevice {
        id: "dust-01",
        unit: 1,
        profile: "generic-dust-monitor",
    },
    DemoDevice {
        id: "wind-speed-01",
        unit: 2,
        profile: "renke-rs-fsjt-n01",
    },
    DemoDevice {
        id: "wind-dir-01",
        unit: 3,
        profile: "renke-rs-fxjt-n01",
    },
    DemoDevice {
        id: "pm-gate-01",
        unit: 4,
        profile: "bolin-pm-meter",
    },
    DemoDevice {
        id: "water-01",
        unit: 5,
        profile: "generic-water-probe",
    },
    DemoDevice {
        id: "ph-01",
        unit: 6,
        profile: "phg-2091-ph",
    },
    DemoDevice {
        id: "relay-01",
        unit: 7,
        profile: "relay-module-8ch",
    },
];

/// Random walks per (device, metric), and the randomness behind them.
pub struct Scenario {
    rng: Jitter,
    walks: HashMap<(String, String), f64>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

fn bump(h: f64, centre: f64, width: f64) -> f64 {
    (-(h - centre).powi(2) / (2.0 * width * width)).exp()
}

impl Scenario {
    pub fn new() -> Self {
        Self {
            rng: Jitter::new(),
            walks: HashMap::new(),
        }
    }

    /// A mean-reverting random walk in [-1, 1] for one series.
    fn walk(&mut self, device: &str, metric: &str) -> f64 {
        let step = self.rng.next_f64() - 0.5;
        let w = self
            .walks
            .entry((device.to_string(), metric.to_string()))
            .or_insert(0.0);
        *w = (*w * 0.9 + step * 0.4).clamp(-1.0, 1.0);
        *w
    }

    /// The value of `metric` of `device` at local hour `h` (0..24, fractional); `None` for a
    /// metric the scenario leaves alone (coils the gateway may switch).
    pub fn value(&mut self, device: &str, metric: &str, h: f64) -> Option<f64> {
        let day = (6.0..22.0).contains(&h);
        let w = self.walk(device, metric);
        let pm10 = |w: f64| {
            (55.0 + 70.0 * bump(h, 8.5, 1.3) + 50.0 * bump(h, 17.5, 1.8) + 25.0 * w).max(5.0)
        };
        let v = match metric {
            "pm10" => pm10(w),
            "pm25" => 0.55 * pm10(self.walk(device, "pm10")) + 4.0 * w,
            "tsp" => 1.7 * pm10(self.walk(device, "pm10")) + 10.0 * w,
            // Loud while the site works (07:00–19:00), quieter in the evening, quiet at night.
            "noise" => {
                if (7.0..19.0).contains(&h) {
                    61.0 + 5.0 * bump(h, 10.0, 2.0) + 3.0 * w
                } else if day {
                    52.0 + 3.0 * w
                } else {
                    47.0 + 3.0 * w
                }
            }
            "temperature" => 9.0 + 6.0 * ((h - 9.0) / 24.0 * std::f64::consts::TAU).sin() + w,
            "humidity" => (62.0 - 15.0 * ((h - 9.0) / 24.0 * std::f64::consts::TAU).sin()
                + 5.0 * w)
                .clamp(5.0, 100.0),
            "pressure" => 101.3 + 0.3 * w,
            "wind_speed" => (2.2 + 1.5 * bump(h, 14.0, 3.0) + 1.2 * w).max(0.0),
            "wind_direction" => (135.0 + 120.0 * w).rem_euclid(360.0),
            "wind_direction_gear" => ((135.0 + 120.0 * w).rem_euclid(360.0) / 45.0).round() % 8.0,
            "ph" => 7.3 + 0.3 * w,
            "do" => 6.5 + 1.0 * w,
            "cod" => 16.0 + 5.0 * w,
            "nh3n" => 0.6 + 0.2 * w,
            "tp" => 0.12 + 0.04 * w,
            "ss" => 22.0 + 8.0 * w,
            "turbidity" => 6.0 + 2.0 * w,
            "conductivity" => 480.0 + 40.0 * w,
            "water_temperature" => {
                13.0 + 2.0 * ((h - 12.0) / 24.0 * std::f64::consts::TAU).sin() + 0.3 * w
            }
            "sensor_status" => 0.0,
            _ => return None,
        };
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_plausible_all_day() {
        let mut s = Scenario::new();
        for step in 0..(24 * 12) {
            let h = f64::from(step) / 12.0;
            let pm10 = s.value("d", "pm10", h).unwrap();
            assert!((5.0..300.0).contains(&pm10), "{pm10}");
            let noise = s.value("d", "noise", h).unwrap();
            assert!((40.0..80.0).contains(&noise), "{noise}");
            let dir = s.value("d", "wind_direction", h).unwrap();
            assert!((0.0..360.0).contains(&dir));
        }
        assert!(s.value("d", "fog_cannon_on", 1.0).is_none());
    }
}
