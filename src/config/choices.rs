//! The enums behind every choice key: one list of names each, shared by the
//! key table (messages, samples check), the parser and the code.

use super::options::Choice;
use crate::compress::Codec;

/// An enum whose variants are configuration words.
macro_rules! choice_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vm])* $var,)+
        }

        impl Choice for $name {
            fn all() -> Vec<Self> {
                vec![$($name::$var,)+]
            }

            fn name(self) -> &'static str {
                match self {
                    $($name::$var => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use choice_enum;

choice_enum! {
    /// `state`: the archiver's maintenance switch.
    State {
        Online = "online",
        /// Every archive call fails, so PostgreSQL keeps its WAL.
        Offline = "offline",
    }
}

choice_enum! {
    /// `backup_type` (or `backup --incremental`).
    BackupType {
        /// Every file stored in the set.
        Full = "full",
        /// Files unchanged since the previous complete backup are referenced
        /// in the set that stores them, not stored again.
        Incremental = "incremental",
    }
}

choice_enum! {
    /// `ship_mode`.
    ShipMode {
        /// Succeed once the file is durably spooled locally (pitrtools).
        Async = "async",
        /// Succeed only when every destination has the file (OmniPITR).
        Sync = "sync",
    }
}

choice_enum! {
    /// `queue_runner`: does an archive call that leaves files queued start
    /// the queue runner (`pitrkit queue`, pitrtools' cmd_queue)?
    QueueRunner {
        /// Start a detached runner that ships until every queue is empty.
        Auto = "auto",
        /// Never (a site that runs the queue service instead).
        Off = "off",
    }
}

choice_enum! {
    /// `sslmode`: libpq's words.
    SslMode {
        Disable = "disable",
        Allow = "allow",
        Prefer = "prefer",
        Require = "require",
        VerifyCa = "verify-ca",
        VerifyFull = "verify-full",
    }
}

impl SslMode {
    /// TLS at all costs: no plain-text fallback.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The master's certificate must chain to a trusted root.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

choice_enum! {
    /// `sql_via_ssh`: pitrkit's SQL session through an ssh tunnel to the master.
    SqlViaSsh {
        /// Through ssh when the direct connection cannot be made.
        Auto = "auto",
        On = "on",
        Off = "off",
    }
}

choice_enum! {
    /// `strict_host_key_checking`: OpenSSH's StrictHostKeyChecking.
    HostKeyChecking {
        Yes = "yes",
        AcceptNew = "accept-new",
        /// Insecure; accepted because some sites need it.
        No = "no",
    }
}

/// `compression`: the codec list is compress.rs's, not repeated here.
impl Choice for Codec {
    fn all() -> Vec<Self> {
        Codec::ALL.to_vec()
    }

    fn name(self) -> &'static str {
        Codec::name(self)
    }
}

/// `slave_compression`: a codec, or the local archive's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaveCodec {
    Same,
    Codec(Codec),
}

impl Choice for SlaveCodec {
    fn all() -> Vec<Self> {
        std::iter::once(SlaveCodec::Same)
            .chain(Codec::ALL.into_iter().map(SlaveCodec::Codec))
            .collect()
    }

    fn name(self) -> &'static str {
        match self {
            SlaveCodec::Same => "same",
            SlaveCodec::Codec(c) => c.name(),
        }
    }
}
