//! The OpenSSH client as a subprocess: argument vectors only, no local shell.
//!
//! Using the system `ssh` (not an SSH library) means the user's
//! `~/.ssh/config`, known_hosts and agent apply to every connection pitrkit
//! makes, exactly as when they test with `ssh host` by hand.

use std::path::PathBuf;
use std::process::Command;

pub use crate::config::SshSettings;
use crate::tools;

/// OpenSSH's own default ciphers, AES-GCM first. With AES instructions in
/// the CPU (x86-64 since about 2010, ARMv8 with the crypto extension) AES-GCM
/// costs about half the CPU of chacha20-poly1305, OpenSSH's first choice
/// (BENCHMARKS.md), and on a base backup ssh is a large part of the CPU used.
/// Only the order differs from OpenSSH's default set, so nothing weaker is
/// ever offered, and the server's own restrictions still decide.
pub const CIPHERS: &str =
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

impl SshSettings {
    pub fn program(&self) -> Result<PathBuf, tools::NotFound> {
        tools::find_program("ssh", self.program.as_deref(), &self.includepath)
    }

    /// True when the user's own options (`ssh` key words, `ssh_options`) set
    /// the ssh option `key`, as `-o Key=v` or `-oKey=v` (any case).
    fn user_sets(&self, key: &str) -> bool {
        let mut prev_o = false;
        self.extra_args.iter().any(|a| {
            let setting = if prev_o { Some(a.as_str()) } else { a.strip_prefix("-o") };
            prev_o = a == "-o";
            setting.is_some_and(|kv| {
                kv.split(['=', ' ', '\t'])
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case(key))
            })
        })
    }

    /// Options for every connection. The user's own options come first:
    /// ssh takes the first value it sees for an option, so theirs win.
    /// BatchMode: never wait for a password prompt nobody will answer inside
    /// archive_command. ServerAlive*: a slave that stops answering mid-session
    /// is given up after about a minute instead of hanging.
    pub fn options(&self) -> Vec<String> {
        let mut a: Vec<String> = self.extra_args.clone();
        let mut opt = |kv: String| {
            a.push("-o".into());
            a.push(kv);
        };
        opt("BatchMode=yes".into());
        if !self.connect_timeout.is_zero() {
            opt(format!("ConnectTimeout={}", self.connect_timeout.as_secs()));
        }
        if !self.user_sets("StrictHostKeyChecking") {
            opt(format!("StrictHostKeyChecking={}", self.strict_host_key_checking));
        }
        // The user's choice (`ssh_options: Ciphers=...`, or -c in the legacy
        // `ssh` key) wins.
        if !self.user_sets("Ciphers") && !self.extra_args.iter().any(|a| a.starts_with("-c")) {
            opt(format!("Ciphers={CIPHERS}"));
        }
        opt("ServerAliveInterval=15".into());
        opt("ServerAliveCountMax=4".into());
        if let Some(dir) = self.control_dir() {
            // One TCP+SSH handshake per host per ControlPersist window instead
            // of one per rsync and per remote sync.
            opt("ControlMaster=auto".into());
            opt(format!("ControlPersist={}", self.control_persist.as_secs()));
            opt(format!("ControlPath={}/%C", dir.display()));
        }
        if let Some(p) = self.port {
            a.push("-p".into());
            a.push(p.to_string());
        }
        if let Some(i) = &self.identity {
            a.push("-i".into());
            a.push(i.display().to_string());
        }
        if let Some(u) = &self.user {
            a.push("-l".into());
            a.push(u.clone());
        }
        if self.debug {
            a.push("-v".into());
        }
        a
    }

    /// The private directory for multiplexing sockets, when connection reuse
    /// is on and the user has not configured multiplexing themselves. The
    /// path stays short (sockets are limited to ~100 bytes) and is checked to
    /// be ours and private: anyone who can reach a control socket can use the
    /// connection. If the check fails we simply do not multiplex.
    pub fn control_dir(&self) -> Option<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        // With -v, OpenSSH keeps a persisting master's stderr open, and whoever
        // reads our stderr pipe would wait for it: no multiplexing while debugging.
        if self.control_persist.is_zero()
            || self.debug
            || self.user_sets("ControlMaster")
            || self.user_sets("ControlPath")
        {
            return None;
        }
        let uid = nix::unistd::geteuid().as_raw();
        let dir = PathBuf::from(format!("/tmp/pitrkit-ssh-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0 => Some(dir),
            _ => {
                log::debug!(
                    "{} is not a private directory of ours; not multiplexing ssh",
                    dir.display()
                );
                None
            }
        }
    }

    /// `ssh [options] host -- remote words...`. The remote sshd hands the words
    /// to the remote user's shell, so each is single-quoted.
    pub fn command(&self, host: &str, remote: &[&str]) -> Result<Command, tools::NotFound> {
        let mut c = Command::new(self.program()?);
        c.args(self.options()).arg(host).arg("--");
        c.arg(remote.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" "));
        Ok(c)
    }

    /// `ssh [options] host -- script`: a small remote shell script whose
    /// every interpolated value the caller has validated and quoted.
    pub fn script(&self, host: &str, script: &str) -> Result<Command, tools::NotFound> {
        let mut c = Command::new(self.program()?);
        c.args(self.options()).arg(host).arg("--").arg(script);
        Ok(c)
    }

    /// The value for `rsync -e`: rsync splits it on white space itself (no
    /// shell); every word was validated to contain none.
    pub fn rsync_rsh(&self) -> Result<String, tools::NotFound> {
        let mut words = vec![self.program()?.display().to_string()];
        words.extend(self.options());
        Ok(words.join(" "))
    }
}

/// Quotes a word for a POSIX shell on the remote side.
pub fn shell_quote(w: &str) -> String {
    if !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=+,:@%".contains(&b))
    {
        return w.to_string();
    }
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// `host` as rsync wants it in `host:path` (IPv6 literals in brackets).
pub fn rsync_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::options::{Options, ARCHIVER_OPTIONS};
    use crate::config::{ConfigError, IniFile};
    use std::path::Path;

    fn settings(text: &str) -> Result<SshSettings, ConfigError> {
        let f = IniFile::parse(Path::new("a.ini"), text).unwrap();
        SshSettings::from_options(&Options::new(&f, ARCHIVER_OPTIONS).unwrap())
    }

    #[test]
    fn options_are_an_argument_vector() {
        let s = settings(
            "user: postgres\nssh_port: 2222\nssh_timeout: 7\nssh_identity: /k/id\nssh_options: ServerAliveInterval=5\n",
        )
        .unwrap();
        let o = s.options();
        let joined = o.join(" ");
        assert!(joined.contains("-o BatchMode=yes"));
        assert!(joined.contains("-o ConnectTimeout=7"));
        assert!(joined.contains("-o StrictHostKeyChecking=accept-new"));
        assert!(joined.contains("-p 2222 -i /k/id -l postgres"));
        assert!(joined.contains("-o ServerAliveInterval=15 -o ServerAliveCountMax=4"));
        // ssh keeps the first value it sees: the user's options go first.
        assert_eq!(&o[..2], ["-o", "ServerAliveInterval=5"]);
        let first = |k: &str| o.iter().position(|x| x.starts_with(k)).unwrap();
        assert!(first("ServerAliveInterval=5") < first("ServerAliveInterval=15"));
    }

    #[test]
    fn aes_gcm_first_unless_the_user_chooses_ciphers() {
        let ours = format!("Ciphers={CIPHERS}");
        let o = settings("ssh_options: ServerAliveInterval=5\n").unwrap().options();
        assert!(o.contains(&ours), "{o:?}");
        assert!(CIPHERS.starts_with("aes128-gcm@openssh.com,"));
        for theirs in [
            "ssh_options: Ciphers=aes256-ctr\n",
            "ssh_options: ciphers=aes256-ctr\n",
            "ssh: /usr/bin/ssh -c aes256-ctr\n",
            "ssh: /usr/bin/ssh -oCiphers=aes256-ctr\n",
        ] {
            let o = settings(theirs).unwrap().options();
            assert!(!o.contains(&ours), "{theirs}: {o:?}");
            assert!(o.join(" ").contains("aes256-ctr"), "{theirs}: {o:?}");
        }
    }

    #[test]
    fn legacy_ssh_words_come_before_pitrkits_defaults() {
        let s = settings("ssh: /usr/bin/ssh -F none -o BatchMode=no\n").unwrap();
        let o = s.options();
        assert_eq!(&o[..4], ["-F", "none", "-o", "BatchMode=no"]);
        assert!(o.contains(&"BatchMode=yes".to_string()));
    }

    #[test]
    fn never_disables_host_key_checks_by_default_but_respects_the_user() {
        let s = settings("ssh_options: StrictHostKeyChecking=yes\n").unwrap();
        let j = s.options().join(" ");
        assert!(!j.contains("accept-new") && j.contains("StrictHostKeyChecking=yes"));
        // The attached form in the legacy key, in any case.
        for legacy in [
            "ssh: /usr/bin/ssh -oStrictHostKeyChecking=yes\n",
            "ssh: /usr/bin/ssh -ostricthostkeychecking=yes\n",
            "ssh: /usr/bin/ssh -o STRICTHOSTKEYCHECKING=yes\n",
        ] {
            let j = settings(legacy).unwrap().options().join(" ");
            assert!(!j.contains("accept-new"), "{legacy}: {j}");
        }
        let d = settings("").unwrap().options().join(" ");
        assert!(d.contains("-o StrictHostKeyChecking=accept-new"), "{d}");
        let no = settings("strict_host_key_checking: no\n").unwrap().options().join(" ");
        assert!(no.contains("-o StrictHostKeyChecking=no"), "{no}");
    }

    #[test]
    fn legacy_ssh_key_and_bad_values() {
        let s = settings("ssh: /usr/bin/ssh -p 2200\n").unwrap();
        assert_eq!(s.program.as_deref(), Some(Path::new("/usr/bin/ssh")));
        // The port is taken out of the options: left there, ssh would take
        // it over ssh_port (ssh keeps the first -p it is given).
        assert_eq!((s.extra_args.len(), s.port), (0, Some(2200)));
        let s = settings("ssh: /usr/bin/ssh -p2200 -4\nssh_port: 2200\n").unwrap();
        assert_eq!((s.extra_args, s.port), (vec!["-4".to_string()], Some(2200)));
        let e = settings("ssh: /usr/bin/ssh -p 22\nssh_port: 2200\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssh says -p 22 but ssh_port is 2200"), "{e}");
        assert!(settings("ssh: /usr/bin/ssh -p\n").is_err());
        assert!(settings("ssh: /usr/bin/ssh;id\n").is_err());
        assert!(settings("ssh_options: ProxyCommand\n")
            .unwrap_err()
            .to_string()
            .contains("Key=Value"));
        assert!(settings("ssh_port: 70000\n").is_err());
    }

    #[test]
    fn connections_are_reused_unless_turned_off_or_configured_by_the_user() {
        let on = settings("").unwrap().options().join(" ");
        assert!(
            on.contains("-o ControlMaster=auto -o ControlPersist=60 -o ControlPath=/tmp/pitrkit-ssh-"),
            "{on}"
        );
        let off = settings("ssh_control_persist: 0\n").unwrap().options().join(" ");
        assert!(!off.contains("Control"), "{off}");
        let debugging = settings("ssh_debug: on\n").unwrap().options().join(" ");
        assert!(!debugging.contains("Control"), "{debugging}");
        let theirs = settings("ssh_options: ControlPath=/run/x/%C\n")
            .unwrap()
            .options()
            .join(" ");
        assert!(!theirs.contains("ControlMaster=auto"), "{theirs}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/var/lib/pg"), "/var/lib/pg");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(rsync_host("::1"), "[::1]");
    }
}
