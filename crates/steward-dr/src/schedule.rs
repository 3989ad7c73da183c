//! When a backup, drill or repository check is due: a cron expression (5 fields, UTC) or
//! `every DURATION`. Pure: time is an argument.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Shortest interval accepted for `every`.
const MIN_EVERY: Duration = Duration::from_secs(60);

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum When {
    Cron(Box<croner::Cron>),
    Every(Duration),
}

impl When {
    /// Parses `"0 3 * * *"` or `"every 6h"`; the error says how to write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix("every") {
            let rest = rest.trim();
            let d = humantime::parse_duration(rest).map_err(|e| {
                format!("{rest:?} is not a duration ({e}); write e.g. \"every 6h\" or \"every 1d\"")
            })?;
            if d < MIN_EVERY {
                return Err(format!(
                    "\"every {rest}\" is shorter than one minute; back up less often"
                ));
            }
            return Ok(When::Every(d));
        }
        croner::Cron::new(t)
            .parse()
            .map(|c| When::Cron(Box::new(c)))
            .map_err(|e| {
                format!(
                    "{t:?} is not a cron expression ({e}); write five fields in UTC such as \"0 3 * * *\" (03:00 every day), or \"every 6h\""
                )
            })
    }

    /// The first time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            When::Every(d) => chrono::Duration::from_std(*d).ok().map(|d| t + d),
            When::Cron(c) => c.find_next_occurrence(&t, false).ok(),
        }
    }

    /// The typical gap between two runs (for an `every`, the interval; for cron, the gap
    /// after `t`).
    pub fn period_after(&self, t: DateTime<Utc>) -> Option<Duration> {
        let a = self.next_after(t)?;
        let b = self.next_after(a)?;
        (b - a).to_std().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_and_every_give_the_next_time() {
        let daily = When::parse("0 3 * * *").unwrap();
        assert_eq!(
            daily.next_after(at("2026-12-01T02:00:00Z")),
            Some(at("2026-12-01T03:00:00Z"))
        );
        assert_eq!(
            daily.next_after(at("2026-12-01T03:00:00Z")),
            Some(at("2026-12-02T03:00:00Z"))
        );
        assert_eq!(
            daily.period_after(at("2026-12-01T00:00:00Z")),
            Some(Duration::from_secs(86_400))
        );
        let six = When::parse("every 6h").unwrap();
        assert_eq!(
            six.next_after(at("2026-12-01T02:00:00Z")),
            Some(at("2026-12-01T08:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_say_how_to_write_them() {
        assert!(When::parse("every 10s").unwrap_err().contains("one minute"));
        assert!(When::parse("every soon").unwrap_err().contains("every 6h"));
        assert!(When::parse("3am").unwrap_err().contains("five fields"));
    }
}
