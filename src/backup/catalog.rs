//! `backup --list`: what the repository holds, for people and (as JSON,
//! documented in the README and stable) for monitoring.

use std::fmt::Write as _;

use anyhow::Result;

use super::manifest::format_lsn;
use super::repo::{Repository, SetInfo};
use crate::config::BackupType;

/// One set as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// `None` while incomplete.
    pub kind: Option<BackupType>,
    pub complete: bool,
    /// Why it is not complete.
    pub problem: Option<String>,
    pub start_time: Option<i64>,
    pub stop_time: Option<i64>,
    pub start_lsn: Option<String>,
    pub stop_lsn: Option<String>,
    pub timeline: Option<u32>,
    /// Bytes in the repository (data and WAL): what the set stores itself,
    /// not the files it references in another set.
    pub size_stored: u64,
    pub size_original: Option<u64>,
    /// An incremental's: the sets whose stored files it references.
    pub depends_on: Option<Vec<String>>,
}

pub struct Catalog {
    pub sets: Vec<Listed>,
    /// Seconds since the newest complete backup ended.
    pub newest_complete_age: Option<i64>,
}

fn stored_bytes(repo: &Repository, id: &str) -> u64 {
    repo.store.tree_size(id).unwrap_or_default()
}

fn listed(repo: &Repository, s: SetInfo) -> Listed {
    let size_stored = stored_bytes(repo, &s.id);
    match s.manifest {
        Ok(m) => Listed {
            id: s.id,
            kind: Some(m.kind),
            depends_on: (m.kind == BackupType::Incremental).then(|| m.depends_on()),
            complete: true,
            problem: None,
            start_time: Some(m.start_time),
            stop_time: Some(m.stop_time),
            start_lsn: Some(format_lsn(m.start_lsn)),
            stop_lsn: Some(format_lsn(m.stop_lsn)),
            timeline: Some(m.timeline),
            size_stored,
            size_original: Some(m.original_size()),
        },
        Err(why) => Listed {
            id: s.id,
            kind: None,
            depends_on: None,
            complete: false,
            problem: Some(why),
            start_time: None,
            stop_time: None,
            start_lsn: None,
            stop_lsn: None,
            timeline: None,
            size_stored,
            size_original: None,
        },
    }
}

pub fn catalog(repo: &Repository) -> Result<Catalog> {
    let sets: Vec<Listed> = repo.sets()?.into_iter().map(|s| listed(repo, s)).collect();
    let now = chrono::Utc::now().timestamp_micros();
    let newest_complete_age = sets
        .iter()
        .filter_map(|s| s.stop_time)
        .max()
        .map(|t| (now - t).max(0) / 1_000_000);
    Ok(Catalog {
        sets,
        newest_complete_age,
    })
}

/// ISO 8601 UTC with microseconds.
fn iso(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", super::pgmanifest::escape(s))
}

fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> String) -> String {
    v.as_ref().map_or_else(|| "null".to_string(), f)
}

impl Catalog {
    /// The JSON document (see README, "backup --list --json").
    pub fn json(&self) -> String {
        let sets: Vec<String> = self
            .sets
            .iter()
            .map(|s| {
                format!(
                    "{{\"id\":{},\"type\":{},\"complete\":{},\"problem\":{},\"start_time\":{},\"stop_time\":{},\
                     \"start_lsn\":{},\"stop_lsn\":{},\"timeline\":{},\"size_stored\":{},\"size_original\":{},\"depends_on\":{}}}",
                    json_str(&s.id),
                    opt(&s.kind, |k| json_str(&k.to_string())),
                    s.complete,
                    opt(&s.problem, |p| json_str(p)),
                    opt(&s.start_time, |t| json_str(&iso(*t))),
                    opt(&s.stop_time, |t| json_str(&iso(*t))),
                    opt(&s.start_lsn, |l| json_str(l)),
                    opt(&s.stop_lsn, |l| json_str(l)),
                    opt(&s.timeline, u32::to_string),
                    s.size_stored,
                    opt(&s.size_original, u64::to_string),
                    opt(&s.depends_on, |ids| format!(
                        "[{}]",
                        ids.iter().map(|i| json_str(i)).collect::<Vec<_>>().join(",")
                    ))
                )
            })
            .collect();
        format!(
            "{{\"backups\":[{}],\"newest_complete_age_seconds\":{}}}\n",
            sets.join(","),
            opt(&self.newest_complete_age, i64::to_string)
        )
    }

    /// A table for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{:<17} {:<11} {:<10} {:<27} {:<27} {:>13} {:>13} {:>3} {:>10} {:>10} {}\n",
            "ID",
            "TYPE",
            "STATE",
            "START",
            "STOP",
            "START LSN",
            "STOP LSN",
            "TL",
            "STORED MiB",
            "SIZE MiB",
            "DEPENDS ON"
        );
        for s in &self.sets {
            let _ = writeln!(
                out,
                "{:<17} {:<11} {:<10} {:<27} {:<27} {:>13} {:>13} {:>3} {:>10} {:>10} {}",
                s.id,
                opt(&s.kind, |k| k.to_string().to_string()),
                if s.complete { "complete" } else { "INCOMPLETE" },
                opt(&s.start_time, |t| iso(*t)),
                opt(&s.stop_time, |t| iso(*t)),
                s.start_lsn.as_deref().unwrap_or("-"),
                s.stop_lsn.as_deref().unwrap_or("-"),
                opt(&s.timeline, u32::to_string),
                s.size_stored >> 20,
                opt(&s.size_original, |b| (b >> 20).to_string()),
                s.depends_on.as_ref().map_or("-".to_string(), |d| d.join(","))
            );
        }
        match self.newest_complete_age {
            Some(a) => {
                let _ = writeln!(out, "newest complete backup ended {a} s ago");
            }
            None => out.push_str("no complete backup\n"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_stable() {
        let c = Catalog {
            sets: vec![Listed {
                id: "20261130T101500Z".into(),
                kind: None,
                depends_on: None,
                complete: false,
                problem: Some("no \"manifest\"".into()),
                start_time: None,
                stop_time: Some(1_764_497_703_654_321),
                start_lsn: None,
                stop_lsn: Some("0/2000138".into()),
                timeline: Some(1),
                size_stored: 10,
                size_original: None,
            }],
            newest_complete_age: Some(5),
        };
        assert_eq!(
            c.json(),
            "{\"backups\":[{\"id\":\"20261130T101500Z\",\"type\":null,\"complete\":false,\"problem\":\"no \\\"manifest\\\"\",\
             \"start_time\":null,\"stop_time\":\"2025-11-30T10:15:03.654321Z\",\"start_lsn\":null,\"stop_lsn\":\"0/2000138\",\
             \"timeline\":1,\"size_stored\":10,\"size_original\":null,\"depends_on\":null}],\"newest_complete_age_seconds\":5}\n"
        );
        assert!(c.text().contains("INCOMPLETE"));
        let incremental = Listed {
            kind: Some(BackupType::Incremental),
            complete: true,
            problem: None,
            depends_on: Some(vec!["20261129T101500Z".into(), "20261129T221500Z".into()]),
            ..c.sets[0].clone()
        };
        let c = Catalog {
            sets: vec![incremental],
            newest_complete_age: None,
        };
        assert!(
            c.json()
                .contains("{\"id\":\"20261130T101500Z\",\"type\":\"incremental\",\"complete\":true,\"problem\":null,"),
            "{}",
            c.json()
        );
        assert!(
            c.json()
                .contains("\"depends_on\":[\"20261129T101500Z\",\"20261129T221500Z\"]}"),
            "{}",
            c.json()
        );
        assert!(c.text().contains(" incremental ") && c.text().contains(" 20261129T101500Z,20261129T221500Z\n"));
    }
}
