//! cron expressions, five fields (minute granularity) or six (with seconds),
//! evaluated by `croner` on the floating wall clock.
//!
//! DST, as the README documents it: a time that falls into the gap of a
//! spring-forward day runs once, right after the gap (02:30 in Berlin runs at
//! 03:00; 02:00 and 02:30 both run once, at 03:00); a time in the overlap of a
//! fall-back day runs once, at its first instant. So every wall-clock time the
//! expression names runs at most once a day, never twice and never not at all.

use chrono::{Duration, NaiveDateTime};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Direction};

use super::rule::{Occurrence, RuleError};
use super::zone::{self, GapRule};

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: Cron,
}

impl CronSpec {
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let fields = text.split_whitespace().count();
        let starts_with_alias = text.trim_start().starts_with('@');
        if !starts_with_alias && !(5..=6).contains(&fields) {
            return Err(RuleError::Cron {
                rule: text.to_string(),
                reason: format!("expected 5 fields (or 6 with seconds), found {fields}"),
            });
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(text).map_err(|e| RuleError::Cron {
            rule: text.to_string(),
            reason: e.to_string(),
        })?;
        Ok(CronSpec { cron })
    }

    /// Occurrences from the local `anchor` (included when it matches), each
    /// placed in `zone`; several local times that land on one instant (a gap)
    /// are one occurrence.
    pub fn expand(
        &self,
        zone: Tz,
        anchor: NaiveDateTime,
    ) -> impl Iterator<Item = Occurrence> + Send + 'static {
        let mut last = None;
        // The iterator ends when croner finds no further match (its search is
        // bounded), which is how "never fires" shows.
        self.cron
            .clone()
            .iter_from(anchor, Direction::Forward)
            .filter_map(move |local: NaiveDateTime| {
                let at = zone::to_instant(zone, local, GapRule::RightAfterGap)?;
                if last.is_some_and(|l| at <= l) {
                    return None;
                }
                last = Some(at);
                Some(Occurrence { local, at })
            })
            // A pathological expression can keep croner searching for years;
            // nothing we schedule is further than this from its anchor.
            .take_while(move |o| o.local - anchor < Duration::days(366 * 100))
    }
}
