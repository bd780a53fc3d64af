//! `config/taskstream.toml` documents every key with its default: it must
//! parse to exactly the built-in defaults and mention every key.

use taskstream::config::Config;

const FILE: &str = include_str!("../../config/taskstream.toml");

fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    if let toml::Value::Table(t) = v {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(path.clone());
            keys(&path, v, out);
        }
    }
}

#[test]
fn documented_config_equals_the_built_in_defaults() {
    let parsed: Config = toml::from_str(FILE).expect("config/taskstream.toml parses");
    assert_eq!(parsed, Config::default());
}

#[test]
fn documented_config_mentions_every_key() {
    let defaults = toml::Value::try_from(Config::default()).unwrap();
    let documented: toml::Value = toml::from_str(FILE).unwrap();
    let mut want = Vec::new();
    keys("", &defaults, &mut want);
    let mut have = Vec::new();
    keys("", &documented, &mut have);
    let missing: Vec<_> = want.iter().filter(|k| !have.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "keys missing from config/taskstream.toml: {missing:?}"
    );
}
