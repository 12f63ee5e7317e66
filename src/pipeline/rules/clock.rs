//! Local time of a reading, cheaply: the site's UTC offset is looked up once per quarter hour
//! of readings, not for every reading (time-zone rules only change on whole quarter hours).

/// A reading's local day (days since 1970-01-01, local), weekday (0 = Monday) and minute of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub day: i64,
    pub weekday: usize,
    pub minute: u16,
}

const QUARTER_MS: i64 = 15 * 60 * 1000;
const DAY_MS: i64 = 86_400_000;

pub struct LocalClock {
    tz: jiff::tz::TimeZone,
    /// (quarter-hour number, offset in ms) of the last lookup.
    cache: (i64, i64),
}

impl LocalClock {
    pub fn new(tz: jiff::tz::TimeZone) -> Self {
        Self {
            tz,
            cache: (i64::MIN, 0),
        }
    }

    pub fn offset_ms(&mut self, t: i64) -> i64 {
        let q = t.div_euclid(QUARTER_MS);
        if self.cache.0 != q {
            let offset = jiff::Timestamp::from_millisecond(t)
                .map_or(0, |ts| i64::from(self.tz.to_offset(ts).seconds()) * 1000);
            self.cache = (q, offset);
        }
        self.cache.1
    }

    pub fn local(&mut self, t: i64) -> Local {
        let local = t + self.offset_ms(t);
        let day = local.div_euclid(DAY_MS);
        Local {
            day,
            // 1970-01-01 was a Thursday.
            weekday: (day + 3).rem_euclid(7) as usize,
            minute: (local.rem_euclid(DAY_MS) / 60_000) as u16,
        }
    }
}

/// A civil date as a day number (days since 1970-01-01).
pub fn day_number(d: jiff::civil::Date) -> i64 {
    jiff::tz::TimeZone::UTC
        .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
        .map_or(0, |ts| ts.as_second().div_euclid(86_400))
}

/// The civil date of a day number.
pub fn date_of(day: i64) -> jiff::civil::Date {
    jiff::Timestamp::from_second(day * 86_400)
        .map(|ts| jiff::tz::TimeZone::UTC.to_datetime(ts).date())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_local_time() {
        let mut c = LocalClock::new(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap());
        // 2026-11-26T14:30:00Z = 22:30 in Shanghai, a Thursday.
        let t = "2026-11-26T14:30:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        let l = c.local(t);
        assert_eq!(l.minute, 22 * 60 + 30);
        assert_eq!(l.weekday, 3);
        assert_eq!(date_of(l.day), jiff::civil::date(2026, 11, 26));
        // 16:30Z is 00:30 the next day, a Friday.
        let l = c.local(t + 2 * 3_600_000);
        assert_eq!((l.minute, l.weekday), (30, 4));
        assert_eq!(day_number(jiff::civil::date(2026, 11, 27)), l.day);
    }
}
