//! Which consumer groups the monitor watches, and on which topics.

use crate::config::Config;

/// One watched group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedGroup {
    pub group: String,
    /// The taskstream worker that owns the group, else the group id.
    pub worker: String,
    pub topics: Vec<String>,
}

/// Every configured worker's group on its topics (`workers.<name>` overrides
/// applied), then `[lag_monitor] groups`. `only`, when non-empty, keeps just
/// the named groups (a name not configured is watched on the topics of
/// `topics_fallback`: every configured event topic).
pub fn watched_groups(config: &Config, only: &[String]) -> Vec<WatchedGroup> {
    let p = &config.pipeline;
    let mut out: Vec<WatchedGroup> = crate::workers::NAMES
        .iter()
        .map(|w| WatchedGroup {
            group: p.group_id(w),
            worker: (*w).to_string(),
            topics: p.topics_for(w, crate::workers::default_topics(w, config)),
        })
        .collect();
    for g in &config.lag_monitor.groups {
        if !out.iter().any(|w| w.group == g.group) {
            out.push(WatchedGroup {
                group: g.group.clone(),
                worker: g.group.clone(),
                topics: g.topics.clone(),
            });
        }
    }
    if only.is_empty() {
        return out;
    }
    only.iter()
        .map(|name| {
            out.iter()
                .find(|w| &w.group == name)
                .cloned()
                .unwrap_or_else(|| WatchedGroup {
                    group: name.clone(),
                    worker: name.clone(),
                    topics: topics_fallback(config),
                })
        })
        .collect()
}

/// Every configured topic: where an unknown group is looked for.
pub fn topics_fallback(config: &Config) -> Vec<String> {
    let t = &config.pipeline.topics;
    vec![
        t.task_events.clone(),
        t.user_events.clone(),
        t.project_events.clone(),
        t.reminders.clone(),
        t.schedule_events.clone(),
        t.notification_events.clone(),
        t.analytics_events.clone(),
        t.task_metrics.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::config::WatchedGroup as Extra;
    use super::*;

    #[test]
    fn every_worker_group_is_watched_plus_the_configured_ones() {
        let mut c = Config::default();
        c.lag_monitor.groups.push(Extra {
            group: "billing".into(),
            topics: vec!["invoices".into()],
        });
        let w = watched_groups(&c, &[]);
        assert!(w
            .iter()
            .any(|g| g.group == "taskstream-audit" && g.worker == "audit"));
        let b = w.iter().find(|g| g.group == "billing").unwrap();
        assert_eq!(b.topics, vec!["invoices".to_string()]);
    }

    #[test]
    fn a_named_unknown_group_is_looked_for_on_every_topic() {
        let c = Config::default();
        let w = watched_groups(&c, &["other".into()]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].topics, topics_fallback(&c));
    }
}
