//! Dimensions: besides one result per window over every event, one result
//! per window, dimension and key (event type, project, priority).
//!
//! Keys are bounded where producers could grow them: a type is a known
//! event type; a priority one of a fixed few labels ([`priority_label`],
//! also the Prometheus label). Projects are free strings: a window's
//! counters hold every project that had events in it (about ten hash fields
//! and a small HyperLogLog each, kept like the window's other state), and a
//! close publishes the `max_keys` projects with the most events as their own
//! results and folds the others into one result with key [`OTHER`].

use std::fmt;

/// The key of events without a project.
pub const NONE: &str = "(none)";
/// The key of the keys folded together beyond `max_keys`.
pub const OTHER: &str = "(other)";

/// What a per-key result is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Type,
    Project,
    Priority,
}

impl Dimension {
    pub const ALL: [Dimension; 3] = [Dimension::Type, Dimension::Project, Dimension::Priority];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Type => "type",
            Dimension::Project => "project",
            Dimension::Priority => "priority",
        }
    }

    /// `type`, `project` or `priority`.
    pub fn parse(s: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority as a key and a label: one of a fixed set (case and
/// surrounding blanks ignored), so producers cannot grow it.
pub fn priority_label(p: Option<&str>) -> &'static str {
    let Some(p) = p.map(str::trim).filter(|p| !p.is_empty()) else {
        return "none";
    };
    const LABELS: &[(&str, &str)] = &[
        ("low", "low"),
        ("medium", "medium"),
        ("normal", "medium"),
        ("high", "high"),
        ("urgent", "urgent"),
        ("critical", "urgent"),
    ];
    LABELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(p))
        .map_or("other", |(_, label)| label)
}

/// Keys with what they count.
pub type Keyed<T> = Vec<(String, T)>;

/// The keys that get their own result: at most `max_keys`, those with the
/// most events (ties: by key). Returns `(kept, folded)`, each ordered by key.
pub fn top_keys<T>(
    mut keys: Keyed<T>,
    events: impl Fn(&T) -> u64,
    max_keys: usize,
) -> (Keyed<T>, Keyed<T>) {
    if keys.len() <= max_keys {
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        return (keys, Vec::new());
    }
    keys.sort_by(|a, b| events(&b.1).cmp(&events(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let mut folded = keys.split_off(max_keys);
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    folded.sort_by(|a, b| a.0.cmp(&b.0));
    (keys, folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_parse_by_name() {
        for d in Dimension::ALL {
            assert_eq!(Dimension::parse(d.as_str()), Some(d));
        }
        assert_eq!(Dimension::parse("colour"), None);
    }

    #[test]
    fn priorities_map_to_a_fixed_set() {
        assert_eq!(priority_label(Some(" High ")), "high");
        assert_eq!(priority_label(Some("normal")), "medium");
        assert_eq!(priority_label(Some("CRITICAL")), "urgent");
        assert_eq!(priority_label(Some("p0")), "other");
        assert_eq!(priority_label(Some(" ")), "none");
        assert_eq!(priority_label(None), "none");
    }

    #[test]
    fn beyond_max_keys_the_smallest_keys_are_folded() {
        let keys = vec![
            ("c".to_string(), 5u64),
            ("a".to_string(), 1),
            ("b".to_string(), 5),
            ("d".to_string(), 9),
        ];
        let (kept, folded) = top_keys(keys.clone(), |n| *n, 2);
        assert_eq!(kept, vec![("b".into(), 5), ("d".into(), 9)]);
        assert_eq!(folded, vec![("a".into(), 1), ("c".into(), 5)]);
        let (kept, folded) = top_keys(keys, |n| *n, 10);
        assert_eq!(kept.len(), 4);
        assert!(folded.is_empty());
        assert_eq!(kept[0].0, "a", "ordered by key");
    }
}
