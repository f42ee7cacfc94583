//! Per-slave delivery state and the notifications its changes trigger.
//!
//! Alerts fire on transitions, not on every archive call (which happens
//! every 16 MB of WAL): warning when a slave starts failing, critical when its
//! queue grows past `queue_critical_depth`, ok when it delivers again.

use std::fs;
use std::path::Path;

use crate::notify::Level;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaveState {
    pub failing: bool,
    /// Unix time of the last delivery attempt.
    pub last_attempt: i64,
    /// Unix time the current status began.
    pub since: i64,
    pub failures: u64,
    pub depth_alarm: bool,
    pub last_error: String,
}

/// What happened to a slave during this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The queue was shipped; `delivered` files left it, `depth` remain.
    Delivered {
        delivered: usize,
        depth: usize,
    },
    Failed {
        error: String,
        depth: usize,
    },
    /// Not attempted (backoff after a failure, or another process ships).
    Skipped {
        depth: usize,
    },
}

impl Event {
    /// Files still queued for the slave afterwards.
    pub fn depth(&self) -> usize {
        match self {
            Event::Delivered { depth, .. } | Event::Failed { depth, .. } | Event::Skipped { depth } => *depth,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    pub message: String,
}

/// Pure transition function: new state plus the notifications to send.
pub fn transition(
    slave: &str,
    prev: &SlaveState,
    event: &Event,
    now: i64,
    critical_depth: usize,
) -> (SlaveState, Vec<Notice>) {
    let mut next = prev.clone();
    let mut notices = Vec::new();
    let depth = match event {
        Event::Delivered { delivered, depth } => {
            next.last_attempt = now;
            if prev.failing {
                notices.push(Notice {
                    level: Level::Ok,
                    message: format!(
                        "slave {slave}: delivery recovered after {} failed attempt(s) over {}s; {delivered} queued file(s) delivered, {depth} left",
                        prev.failures,
                        (now - prev.since).max(0)
                    ),
                });
                next.since = now;
            }
            next.failing = false;
            next.failures = 0;
            next.last_error.clear();
            *depth
        }
        Event::Failed { error, depth } => {
            next.last_attempt = now;
            next.failures += 1;
            next.last_error = error.clone();
            if !prev.failing {
                next.failing = true;
                next.since = now;
                notices.push(Notice {
                    level: Level::Warning,
                    message: format!(
                        "slave {slave}: cannot deliver WAL, {depth} file(s) queued and kept for retry: {error}"
                    ),
                });
            }
            *depth
        }
        Event::Skipped { depth } => *depth,
    };
    if depth > critical_depth && !prev.depth_alarm {
        next.depth_alarm = true;
        notices.push(Notice {
            level: Level::Critical,
            message: format!(
                "slave {slave}: {depth} WAL files queued (over queue_critical_depth {critical_depth}); the standby is falling behind{}",
                if next.last_error.is_empty() { String::new() } else { format!("; last error: {}", next.last_error) }
            ),
        });
    } else if depth <= critical_depth && prev.depth_alarm {
        next.depth_alarm = false;
        if !notices.iter().any(|n| n.level == Level::Ok) {
            notices.push(Notice {
                level: Level::Ok,
                message: format!(
                    "slave {slave}: queue back to {depth} file(s), under queue_critical_depth {critical_depth}"
                ),
            });
        }
    }
    (next, notices)
}

/// Should this call try the slave now? After a failure, wait `retry_after`
/// seconds between attempts so an unreachable slave does not slow every
/// archive call down by a connect timeout (a flush always tries).
pub fn should_attempt(state: &SlaveState, now: i64, retry_after: u64, force: bool) -> bool {
    force || !state.failing || now - state.last_attempt >= retry_after as i64
}

impl SlaveState {
    /// Reads the state file; a missing or garbled file is a fresh state.
    pub fn load(path: &Path) -> SlaveState {
        let Ok(text) = fs::read_to_string(path) else {
            return SlaveState::default();
        };
        let mut s = SlaveState::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            match k {
                "failing" => s.failing = v == "1",
                "last_attempt" => s.last_attempt = v.parse().unwrap_or(0),
                "since" => s.since = v.parse().unwrap_or(0),
                "failures" => s.failures = v.parse().unwrap_or(0),
                "depth_alarm" => s.depth_alarm = v == "1",
                "last_error" => s.last_error = v.to_string(),
                _ => {}
            }
        }
        s
    }

    /// Replaces the state file atomically (temp + rename). Not fsync'd: it
    /// only drives alerts, and losing it costs at most one repeated alert.
    /// Durably: a state lost to a crash would repeat or swallow an alert.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "failing={}\nlast_attempt={}\nsince={}\nfailures={}\ndepth_alarm={}\nlast_error={}\n",
            self.failing as u8,
            self.last_attempt,
            self.since,
            self.failures,
            self.depth_alarm as u8,
            self.last_error.replace('\n', " ")
        );
        crate::fsutil::write_durable(path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(depth: usize) -> Event {
        Event::Failed {
            error: "ssh exit 255".into(),
            depth,
        }
    }

    #[test]
    fn warning_once_when_failing_then_ok_on_recovery() {
        let s0 = SlaveState::default();
        let (s1, n) = transition("sb", &s0, &failed(1), 100, 10);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].level, Level::Warning);
        assert!(n[0].message.contains("slave sb") && n[0].message.contains("ssh exit 255"));
        // Still failing: no repeated alert.
        let (s2, n) = transition("sb", &s1, &failed(2), 130, 10);
        assert!(n.is_empty());
        assert_eq!(s2.failures, 2);
        let (s3, n) = transition("sb", &s2, &Event::Delivered { delivered: 3, depth: 0 }, 160, 10);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].level, Level::Ok);
        assert!(n[0].message.contains("3 queued file(s) delivered"), "{}", n[0].message);
        assert!(!s3.failing);
        // Healthy and delivering: silence.
        let (_, n) = transition("sb", &s3, &Event::Delivered { delivered: 1, depth: 0 }, 170, 10);
        assert!(n.is_empty());
    }

    #[test]
    fn critical_when_queue_crosses_the_depth_once() {
        let (s1, _) = transition("sb", &SlaveState::default(), &failed(10), 1, 10);
        let (s2, n) = transition("sb", &s1, &Event::Skipped { depth: 11 }, 2, 10);
        assert_eq!(n.iter().map(|n| n.level).collect::<Vec<_>>(), vec![Level::Critical]);
        let (s3, n) = transition("sb", &s2, &Event::Skipped { depth: 12 }, 3, 10);
        assert!(n.is_empty());
        let (s4, n) = transition(
            "sb",
            &s3,
            &Event::Delivered {
                delivered: 12,
                depth: 0,
            },
            4,
            10,
        );
        assert_eq!(n.len(), 1, "one ok message covers both recoveries: {n:?}");
        assert!(!s4.depth_alarm);
    }

    #[test]
    fn backoff_after_failure() {
        let (s, _) = transition("sb", &SlaveState::default(), &failed(1), 100, 10);
        assert!(!should_attempt(&s, 110, 30, false));
        assert!(should_attempt(&s, 110, 30, true));
        assert!(should_attempt(&s, 130, 30, false));
        assert!(should_attempt(&SlaveState::default(), 0, 30, false));
    }

    #[test]
    fn state_file_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".state");
        let (s, _) = transition("sb", &SlaveState::default(), &failed(1), 100, 10);
        s.save(&p).unwrap();
        assert_eq!(SlaveState::load(&p), s);
        assert_eq!(SlaveState::load(&d.path().join("missing")), SlaveState::default());
    }
}
