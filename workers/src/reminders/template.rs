//! Subject, plain-text and HTML bodies of a reminder, from minijinja templates.
//!
//! The templates are `reminder.subject.txt`, `reminder.txt` and
//! `reminder.html`: the ones in `config/templates/` are compiled into the
//! binary and used unless `reminders.templates_dir` names a directory holding
//! all three. They are checked once at start by rendering a sample reminder, so
//! a broken template stops the worker at start, not at the first send.
//!
//! What the templates see: `task` (`id`, `title`, `description`, `link`),
//! `due` (`local`, `short`, `date`, `time`, `zone`, `utc`; none when the task
//! has no due time), `fire_at` (same shape), `user` (`id`, `name`, `email`),
//! `channel` and `unsubscribe_url`. Times are in the user's IANA zone (so a
//! DST change between scheduling and firing shows the wall time the user set).
//!
//! What user text can do: nothing but be text. HTML output is autoescaped
//! (`<script>` arrives as `&lt;script&gt;`); the title and the display name are
//! made one line (CR, LF and every other control character become spaces)
//! before any template sees them, and the rendered subject is made one line
//! again, so a title can never start a header or add a recipient.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior, Value};
use url::Url;

use super::notification::{Channel, ReminderNotification};

/// The three template names, which are also their file names.
pub const SUBJECT: &str = "reminder.subject.txt";
pub const TEXT: &str = "reminder.txt";
pub const HTML: &str = "reminder.html";

const EMBEDDED: [(&str, &str); 3] = [
    (
        SUBJECT,
        include_str!("../../../config/templates/reminder.subject.txt"),
    ),
    (TEXT, include_str!("../../../config/templates/reminder.txt")),
    (
        HTML,
        include_str!("../../../config/templates/reminder.html"),
    ),
];

/// Longest subject, in characters; a longer one is cut and ends in `…`.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// A template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reminder template {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("reminder template {name}: {reason}")]
    Render { name: &'static str, reason: String },
    #[error("reminders.link_base_url {url:?}: {reason}")]
    LinkBase { url: String, reason: String },
}

/// The rendered parts of one reminder email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedReminder {
    /// One line, no control characters.
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The loaded templates and the base of task links.
pub struct ReminderTemplates {
    env: Environment<'static>,
    link_base: Url,
}

impl ReminderTemplates {
    /// The templates shipped in the binary.
    pub fn embedded(link_base_url: &str) -> Result<Self, TemplateError> {
        let sources = EMBEDDED.map(|(name, source)| (name, source.to_string()));
        Self::build(sources, link_base_url, Path::new("<embedded>"))
    }

    /// The three templates from `dir`.
    pub fn from_dir(dir: &Path, link_base_url: &str) -> Result<Self, TemplateError> {
        let read = |name: &'static str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|source| (name, source))
                .map_err(|e| TemplateError::Load {
                    path,
                    reason: e.to_string(),
                })
        };
        let sources = [read(SUBJECT)?, read(TEXT)?, read(HTML)?];
        Self::build(sources, link_base_url, dir)
    }

    /// `templates_dir` when set, else the embedded templates.
    pub fn load(templates_dir: &str, link_base_url: &str) -> Result<Self, TemplateError> {
        if templates_dir.trim().is_empty() {
            Self::embedded(link_base_url)
        } else {
            Self::from_dir(Path::new(templates_dir), link_base_url)
        }
    }

    fn build(
        sources: [(&'static str, String); 3],
        link_base_url: &str,
        origin: &Path,
    ) -> Result<Self, TemplateError> {
        let link_base = parse_link_base(link_base_url)?;
        let mut env = Environment::new();
        // Escaping follows the template's name, explicitly: HTML for `.html`,
        // none for the plain-text subject and body.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // A misspelt variable is an error (found by the check below), not an
        // empty string in thousands of emails.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TemplateError::Load {
                path: origin.to_path_buf(),
                reason: e.to_string(),
            })?;
        env.set_syntax(syntax);
        for (name, source) in sources {
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError::Load {
                    path: origin.join(name),
                    reason: describe(&e),
                })?;
        }
        let templates = ReminderTemplates { env, link_base };
        templates.render(&sample(), "https://example.invalid/unsubscribe")?;
        Ok(templates)
    }

    /// The link to a task: the reminder's own when it is an http(s) URL, else
    /// `<link_base_url>/tasks/<task_id>` (the id percent-encoded).
    pub fn task_link(&self, n: &ReminderNotification) -> String {
        task_link(&self.link_base, n)
    }

    /// The base URL links are made from.
    pub fn link_base(&self) -> &Url {
        &self.link_base
    }

    /// Renders subject, text and HTML for one reminder.
    pub fn render(
        &self,
        n: &ReminderNotification,
        unsubscribe_url: &str,
    ) -> Result<RenderedReminder, TemplateError> {
        let title = single_line(&n.title);
        let name = n
            .display_name
            .as_deref()
            .map(single_line)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "there".to_string());
        let description = n
            .description
            .as_deref()
            .map(multi_line)
            .filter(|d| !d.trim().is_empty());
        let ctx = context! {
            task => context! {
                id => n.task_id.clone(),
                title => title,
                description => description,
                link => self.task_link(n),
            },
            due => n.due_at.map(|t| local_time(t, n.time_zone)),
            fire_at => local_time(n.fire_at, n.time_zone),
            user => context! {
                id => n.user_id.clone(),
                name => name,
                email => n.email.clone(),
            },
            channel => n.channel.as_str(),
            time_zone => n.time_zone.name(),
            unsubscribe_url => unsubscribe_url,
        };
        let subject = self.render_one(SUBJECT, &ctx)?;
        Ok(RenderedReminder {
            subject: cut(&single_line(&subject), MAX_SUBJECT_CHARS),
            text: self.render_one(TEXT, &ctx)?,
            html: self.render_one(HTML, &ctx)?,
        })
    }

    fn render_one(&self, name: &'static str, ctx: &Value) -> Result<String, TemplateError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| TemplateError::Render {
                name,
                reason: describe(&e),
            })
    }
}

/// The link to a task: the reminder's own when it is an http(s) URL (never
/// `javascript:` or the like), else `<link_base>/tasks/<task_id>`, the id
/// percent-encoded.
pub fn task_link(link_base: &Url, n: &ReminderNotification) -> String {
    if let Some(link) = n.link.as_deref().and_then(|l| Url::parse(l).ok()) {
        if matches!(link.scheme(), "http" | "https") {
            return link.to_string();
        }
    }
    let mut url = link_base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("tasks").push(&n.task_id);
    }
    url.to_string()
}

/// A time as the templates see it, in the user's zone.
fn local_time(t: DateTime<Utc>, zone: Tz) -> Value {
    let local = t.with_timezone(&zone);
    context! {
        local => local.format("%A %-d %B %Y, %H:%M %Z").to_string(),
        short => local.format("%a %-d %b %H:%M %Z").to_string(),
        date => local.format("%Y-%m-%d").to_string(),
        time => local.format("%H:%M").to_string(),
        zone => zone.name(),
        utc => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// Parses `reminders.link_base_url`: an http(s) URL that can be a base.
pub fn parse_link_base(link_base_url: &str) -> Result<Url, TemplateError> {
    let err = |reason: String| TemplateError::LinkBase {
        url: link_base_url.to_string(),
        reason,
    };
    let url = Url::parse(link_base_url).map_err(|e| err(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(err("expected an http:// or https:// URL".into()));
    }
    Ok(url)
}

/// The error and its chain (minijinja puts the line in the source).
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One line of text: every control character (CR, LF, tab, NEL, the Unicode
/// line and paragraph separators, ...) becomes a space, runs of spaces become
/// one, and the ends are trimmed.
pub fn single_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        let blank = c.is_control() || c.is_whitespace();
        if blank {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Text that may span lines: line endings become `\n`, other control
/// characters (escape sequences, NUL) are dropped.
pub fn multi_line(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

/// At most `max` characters, the last one `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The reminder the templates are checked with at load.
fn sample() -> ReminderNotification {
    let t = DateTime::<Utc>::UNIX_EPOCH;
    ReminderNotification {
        reminder_id: "sample".into(),
        task_id: "sample-task".into(),
        title: "Sample task".into(),
        description: Some("A description".into()),
        due_at: Some(t),
        time_zone: Tz::UTC,
        fire_at: t,
        channel: Channel::Email,
        email: Some("user@example.invalid".into()),
        display_name: Some("Sample User".into()),
        user_id: "sample-user".into(),
        link: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reminder(title: &str) -> ReminderNotification {
        ReminderNotification {
            reminder_id: "r1".into(),
            task_id: "task-42".into(),
            title: title.into(),
            description: Some("Bring the <b>slides</b>\r\nand the notes".into()),
            due_at: Some("2026-03-29T09:00:00Z".parse().unwrap()),
            time_zone: "Europe/Berlin".parse().unwrap(),
            fire_at: "2026-03-29T08:30:00Z".parse().unwrap(),
            channel: Channel::Email,
            email: Some("ada@example.com".into()),
            display_name: Some("Ada".into()),
            user_id: "u1".into(),
            link: None,
        }
    }

    fn templates() -> ReminderTemplates {
        ReminderTemplates::embedded("https://app.example.com/").unwrap()
    }

    #[test]
    fn renders_the_task_due_time_in_the_users_zone_and_link() {
        let r = templates()
            .render(&reminder("Quarterly review"), "https://u.example/x")
            .unwrap();
        // 09:00 UTC on the day Berlin moved to summer time is 11:00 CEST.
        assert_eq!(
            r.subject,
            "Reminder: Quarterly review (due Sun 29 Mar 11:00 CEST)"
        );
        assert!(r.text.contains("Hello Ada,"), "{}", r.text);
        assert!(
            r.text
                .contains("It is due Sunday 29 March 2026, 11:00 CEST."),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("Open the task: https://app.example.com/tasks/task-42"),
            "{}",
            r.text
        );
        assert!(r.text.contains("https://u.example/x"), "{}", r.text);
        assert!(
            r.text.contains("Bring the <b>slides</b>\nand the notes"),
            "plain text is not escaped: {}",
            r.text
        );
        assert!(r.html.contains("<strong>Quarterly review</strong>"));
        assert!(r.html.contains("11:00 CEST"));
    }

    #[test]
    fn the_same_instant_shows_each_users_wall_time() {
        let mut n = reminder("Call");
        n.time_zone = "America/New_York".parse().unwrap();
        let r = templates().render(&n, "https://u.example/x").unwrap();
        assert!(
            r.text.contains("Sunday 29 March 2026, 05:00 EDT"),
            "{}",
            r.text
        );
    }

    #[test]
    fn html_escapes_title_and_description() {
        let r = templates()
            .render(
                &reminder("<script>alert(1)</script> & co"),
                "https://u.example/x",
            )
            .unwrap();
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(r.html.contains("&lt;script&gt;"), "{}", r.html);
        assert!(r.html.contains("&amp; co"), "{}", r.html);
        assert!(!r.html.contains("<b>slides"), "{}", r.html);
        assert!(r.html.contains("&lt;b&gt;slides"), "{}", r.html);
    }

    #[test]
    fn subject_is_one_line_whatever_the_title() {
        let r = templates()
            .render(
                &reminder("Pay rent\r\nBcc: victim@example.com\r\n\r\nbody\u{2028}x\u{85}y\tz"),
                "https://u.example/x",
            )
            .unwrap();
        assert!(!r.subject.contains(['\r', '\n', '\t', '\u{2028}', '\u{85}']));
        assert!(
            r.subject
                .starts_with("Reminder: Pay rent Bcc: victim@example.com body x y z"),
            "{}",
            r.subject
        );
        // The title is one line in the bodies too: no line of them starts with it.
        assert!(!r.text.lines().any(|l| l.starts_with("Bcc:")), "{}", r.text);
    }

    #[test]
    fn a_long_title_is_cut() {
        let r = templates()
            .render(&reminder(&"x".repeat(5000)), "https://u.example/x")
            .unwrap();
        assert_eq!(r.subject.chars().count(), MAX_SUBJECT_CHARS);
        assert!(r.subject.ends_with('…'));
    }

    #[test]
    fn missing_due_time_and_name_render() {
        let mut n = reminder("Someday");
        n.due_at = None;
        n.display_name = Some("\r\n".into());
        n.description = None;
        let r = templates().render(&n, "https://u.example/x").unwrap();
        assert_eq!(r.subject, "Reminder: Someday");
        assert!(!r.text.contains("due"), "{}", r.text);
        assert!(r.text.contains("Hello there,"), "{}", r.text);
    }

    #[test]
    fn task_link_encodes_the_id_and_refuses_other_schemes() {
        let t = templates();
        let mut n = reminder("x");
        n.task_id = "a/b c".into();
        assert_eq!(t.task_link(&n), "https://app.example.com/tasks/a%2Fb%20c");
        n.link = Some("javascript:alert(1)".into());
        assert_eq!(t.task_link(&n), "https://app.example.com/tasks/a%2Fb%20c");
        n.link = Some("https://other.example/t/1".into());
        assert_eq!(t.task_link(&n), "https://other.example/t/1");
    }

    #[test]
    fn templates_load_from_a_directory_and_broken_ones_fail_at_load() {
        let dir = std::env::temp_dir().join(pipelines::testing::unique("templates"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SUBJECT), "Hey {{ task.title }}").unwrap();
        std::fs::write(dir.join(TEXT), "{{ task.link }}").unwrap();
        std::fs::write(dir.join(HTML), "<p>{{ task.title }}</p>").unwrap();
        let t = ReminderTemplates::load(dir.to_str().unwrap(), "http://h").unwrap();
        let r = t.render(&reminder("<x>"), "http://h/u").unwrap();
        assert_eq!(r.subject, "Hey <x>");
        assert_eq!(r.html, "<p>&lt;x&gt;</p>");

        std::fs::write(dir.join(TEXT), "{{ task.titel }}").unwrap();
        let err = ReminderTemplates::from_dir(&dir, "http://h").err().unwrap();
        assert!(err.to_string().contains(TEXT), "{err}");

        std::fs::remove_file(dir.join(HTML)).unwrap();
        let err = ReminderTemplates::from_dir(&dir, "http://h").err().unwrap();
        assert!(err.to_string().contains(HTML), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn single_line_collapses_control_characters() {
        assert_eq!(single_line("  a\r\n\r\nb\t\tc \u{1b}[31m "), "a b c [31m");
        assert_eq!(multi_line("a\r\nb\rc\u{0}d"), "a\nb\ncd");
    }
}
