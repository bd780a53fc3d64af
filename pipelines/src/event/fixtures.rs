//! The example messages of the seed design documents, one fixture file each
//! (`fixtures/seeds/*.json`, the documents' text with only placeholders made
//! concrete). The decoder's tests and `taskstream demo` (`config/demo/events.jsonl`
//! names them with `"seed"`) read these files, so an example lives in one place.

macro_rules! seeds {
    ($($name:literal),* $(,)?) => {
        /// `(name, JSON text)` of every seed example, by file name without `.json`.
        pub const SEEDS: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("fixtures/seeds/", $name, ".json")))),*
        ];
    };
}

seeds![
    "000_standard",
    "001_created",
    "001_updated",
    "001_completed",
    "001_deleted",
    "001_user_registered",
    "001_traced",
    "001_versioned",
    "001_dapr_published",
    "002_spm",
    "003_task_events",
    "003_reminder",
    "003_task_updates",
    "003_published_recurring",
    "004_user_created",
    "004_task_updated",
    "004_task_completed",
];

/// The JSON text of the seed example `name` (`001_created`).
pub fn seed(name: &str) -> Option<&'static str> {
    SEEDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_file_is_listed_and_is_json() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/event/fixtures/seeds");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut listed: Vec<String> = SEEDS.iter().map(|(n, _)| format!("{n}.json")).collect();
        listed.sort();
        assert_eq!(files, listed);
        for (name, text) in SEEDS {
            serde_json::from_str::<serde_json::Value>(text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(seed("002_spm"), Some(SEEDS[9].1));
        assert_eq!(seed("nope"), None);
    }
}
