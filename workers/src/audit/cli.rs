//! `taskstream audit query | verify | report`: reading the trail back.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};

use super::store::{ActivityRow, AuditQuery, AuditStore, VerifyReport};
use super::AuditRecord;

/// Output formats of `audit query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Parses `--from`/`--to`: RFC 3339, or a date (midnight UTC).
pub fn parse_time(flag: &str, value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "{flag} has value {value:?}: expected an RFC 3339 time (2026-01-03T10:00:00Z) or a date (2026-01-03)"
    ))
}

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const COLUMNS: [&str; 10] = [
    "occurred_at",
    "event_type",
    "actor_id",
    "task_id",
    "project_id",
    "changes",
    "event_id",
    "source",
    "ip_address",
    "received_at",
];

fn row(r: &AuditRecord<'_>) -> [String; 10] {
    let changes = if r.changes.is_empty() {
        String::new()
    } else {
        r.changes
            .iter()
            .map(|(k, c)| format!("{k}: {} -> {}", c.old, c.new))
            .collect::<Vec<_>>()
            .join("; ")
    };
    [
        r.occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.event_type.to_string(),
        r.actor_id.as_deref().unwrap_or_default().to_string(),
        r.task_id.as_deref().unwrap_or_default().to_string(),
        r.project_id.as_deref().unwrap_or_default().to_string(),
        changes,
        r.event_id.to_string(),
        format!(
            "{}/{}@{} ({})",
            r.source.topic, r.source.partition, r.source.offset, r.source.dialect
        ),
        r.ip_address.as_deref().unwrap_or_default().to_string(),
        r.received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    ]
}

/// Writes query results in the chosen format.
pub fn write_records(
    out: &mut dyn Write,
    records: &[AuditRecord<'_>],
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            for r in records {
                serde_json::to_writer(&mut *out, r)?;
                writeln!(out)?;
            }
        }
        Format::Csv => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            for r in records {
                let cells: Vec<String> = row(r).iter().map(|c| csv_field(c)).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        Format::Table => {
            let rows: Vec<[String; 10]> = records.iter().map(row).collect();
            // The table shows the first seven columns; json/csv have them all.
            let shown = 7;
            let mut widths: Vec<usize> = COLUMNS[..shown].iter().map(|c| c.len()).collect();
            for r in &rows {
                for (i, c) in r[..shown].iter().enumerate() {
                    widths[i] = widths[i].max(c.chars().count().min(60));
                }
            }
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| {
                        let c: String = c.chars().take(60).collect();
                        format!("{c:<w$}")
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            let header: Vec<String> = COLUMNS[..shown].iter().map(|s| s.to_string()).collect();
            writeln!(out, "{}", line(&header))?;
            for r in &rows {
                writeln!(out, "{}", line(&r[..shown]))?;
            }
            writeln!(out, "({} records)", rows.len())?;
        }
    }
    Ok(())
}

/// Writes the compliance report as CSV: `user_id,event_type,count`.
pub fn write_report(out: &mut dyn Write, rows: &[ActivityRow]) -> std::io::Result<()> {
    writeln!(out, "user_id,event_type,count")?;
    for r in rows {
        writeln!(
            out,
            "{},{},{}",
            csv_field(&r.user_id),
            csv_field(&r.event_type),
            r.count
        )?;
    }
    Ok(())
}

/// Runs `audit query`.
pub async fn query(store: &dyn AuditStore, q: &AuditQuery, format: Format) -> anyhow::Result<()> {
    let records = store.query(q).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_records(&mut out, &records, format)?;
    Ok(())
}

/// Runs `audit verify`; the returned bool is "chain intact".
pub async fn verify(store: &dyn AuditStore) -> anyhow::Result<(bool, VerifyReport)> {
    let report = store.verify().await?;
    match &report.first_break {
        None => println!(
            "ok: {} records checked, hash chain intact",
            report.records_checked
        ),
        Some(b) => println!(
            "BROKEN at {}: {} ({} records checked)",
            b.location, b.reason, report.records_checked
        ),
    }
    Ok((report.first_break.is_none(), report))
}

/// Runs `audit report`.
pub async fn report(
    store: &dyn AuditStore,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    let rows = store.report(from, to).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_report(&mut out, &rows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_and_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn time_flags_accept_rfc3339_and_dates_and_name_bad_values() {
        assert_eq!(
            parse_time("--from", "2026-01-03").unwrap().to_rfc3339(),
            "2026-01-03T00:00:00+00:00"
        );
        assert!(parse_time("--to", "2026-01-03T10:00:00+02:00").is_ok());
        let err = parse_time("--from", "yesterday").unwrap_err();
        assert!(err.contains("--from") && err.contains("yesterday"), "{err}");
    }
}
