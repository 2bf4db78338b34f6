//! The typed event record: one row per invocation, written only by the records writer.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where an invocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Dispatched, not yet terminal.
    Pending,
    /// The function succeeded.
    Success,
    /// The function failed for good (retries exhausted or a permanent failure).
    Failure,
    /// The event was deliberately not invoked (e.g. a cron tick skipped by `concurrency_policy:
    /// forbid`); `error_message` says why.
    Skipped,
}

impl Status {
    /// The stored and displayed form (`PENDING`, `SUCCESS`, `FAILURE`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Skipped => "SKIPPED",
        }
    }

    /// Whether the invocation is over.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown status {0:?}: use PENDING, SUCCESS, FAILURE or SKIPPED")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PENDING" => Ok(Self::Pending),
            "SUCCESS" => Ok(Self::Success),
            "FAILURE" => Ok(Self::Failure),
            "SKIPPED" => Ok(Self::Skipped),
            _ => Err(UnknownStatus(s.to_owned())),
        }
    }
}

/// Why an invocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An attempt ran past its timeout.
    Timeout,
    /// The function could not be reached (connection refused, reset, DNS).
    Connection,
    /// The function answered with a failing HTTP status.
    Status,
    /// The handler raised an exception.
    Handler,
    /// The function's answer could not be understood.
    BadResponse,
    /// The worker process died during the invocation.
    Crashed,
    /// The function could not be started (missing handler, import error).
    Init,
    /// The broker was shutting down before the invocation could finish.
    Shutdown,
    /// The source cancelled the invocation (e.g. cron `concurrency_policy: replace`).
    Cancelled,
    /// The source message could not be decoded into the event it claimed to be; it was
    /// dead-lettered without invoking the function.
    Decode,
}

impl ErrorKind {
    /// The stored form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Status => "status",
            Self::Handler => "handler",
            Self::BadResponse => "bad_response",
            Self::Crashed => "crashed",
            Self::Init => "init",
            Self::Shutdown => "shutdown",
            Self::Cancelled => "cancelled",
            Self::Decode => "decode",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "timeout" => Self::Timeout,
            "connection" => Self::Connection,
            "status" => Self::Status,
            "handler" => Self::Handler,
            "bad_response" => Self::BadResponse,
            "crashed" => Self::Crashed,
            "init" => Self::Init,
            "shutdown" => Self::Shutdown,
            "cancelled" => Self::Cancelled,
            "decode" => Self::Decode,
            other => return Err(format!("unknown error kind {other:?}")),
        })
    }
}

/// A payload as kept in a record: possibly cut, with its original size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The kept text (UTF-8), or base64 of the kept bytes when `base64` is set.
    pub body: String,
    /// Whether `body` is base64 (the payload was not UTF-8).
    pub base64: bool,
    /// Size of the whole payload in bytes.
    pub size: u64,
    /// Whether `body` holds less than the whole payload.
    pub truncated: bool,
}

impl Captured {
    /// Keeps at most `cap` bytes of `bytes` (cut on a character boundary for text).
    pub fn new(bytes: &[u8], cap: usize) -> Self {
        let size = bytes.len() as u64;
        let mut end = bytes.len().min(cap);
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                Self { body: text[..end].to_owned(), base64: false, size, truncated: end < bytes.len() }
            }
            Err(_) => {
                use base64::Engine as _;
                Self {
                    body: base64::engine::general_purpose::STANDARD.encode(&bytes[..end]),
                    base64: true,
                    size,
                    truncated: end < bytes.len(),
                }
            }
        }
    }
}

/// One invocation of one function for one event through one trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Record id (UUIDv7: ordered by creation).
    pub id: Uuid,
    /// The CloudEvent's `id`.
    pub event_id: String,
    /// The CloudEvent's `source`.
    pub event_source: String,
    /// The CloudEvent's `type`.
    pub event_type: String,
    /// The CloudEvent's `subject`.
    pub event_subject: Option<String>,
    /// The trigger that matched (`invoke` for direct invocations).
    pub trigger: String,
    /// The function invoked.
    pub function: String,
    /// Where the invocation stands.
    pub status: Status,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the event was accepted.
    pub received_at: DateTime<Utc>,
    /// When the first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the invocation became terminal.
    pub finished_at: Option<DateTime<Utc>>,
    /// `finished_at - received_at` in milliseconds.
    pub duration_ms: Option<i64>,
    /// The event as sent, in the CloudEvents JSON format (capped).
    pub request: Captured,
    /// The function's HTTP-style status code.
    pub response_status: Option<u16>,
    /// The function's response body (capped).
    pub response: Option<Captured>,
    /// Why it failed.
    pub error_kind: Option<ErrorKind>,
    /// The error message (for handler exceptions: type, message and traceback).
    pub error_message: Option<String>,
    /// Retries were exhausted or the failure was permanent: the event is a dead letter.
    pub dead_lettered: bool,
    /// W3C trace id of the invocation.
    pub trace_id: Option<String>,
    /// What the function printed (capped).
    pub logs: Option<String>,
    /// An attempt had to start a new function instance (process runtimes).
    #[serde(default)]
    pub cold_start: bool,
    /// How long that instance took to initialise, in milliseconds.
    #[serde(default)]
    pub init_ms: Option<i64>,
    /// The record this invocation replays (`switchyard replay`), if it is a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<Uuid>,
    /// The whole event in the CloudEvents JSON format, kept for replay when `request` was cut at the
    /// capture cap (`None` when `request` holds it whole, or when it is over `records.replay_bytes`).
    #[serde(skip)]
    pub event: Option<String>,
}

impl EventRecord {
    /// The whole event this record was made for, in the CloudEvents JSON format, when it was kept.
    pub fn replayable_event(&self) -> Option<&str> {
        match &self.event {
            Some(e) => Some(e),
            None if !self.request.truncated && !self.request.base64 => Some(&self.request.body),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_cuts_on_char_boundary_and_keeps_size() {
        let c = Captured::new("héllo".as_bytes(), 2);
        assert_eq!(c.body, "h");
        assert_eq!(c.size, 6);
        assert!(c.truncated);
        let c = Captured::new(b"abc", 10);
        assert_eq!((c.body.as_str(), c.truncated, c.base64), ("abc", false, false));
        let c = Captured::new(&[0xff, 0xfe, 0x00], 2);
        assert!(c.base64 && c.truncated);
        assert_eq!(c.body, "//4=");
    }

    #[test]
    fn status_round_trips() {
        for s in [Status::Pending, Status::Success, Status::Failure, Status::Skipped] {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        assert!("success".parse::<Status>().is_ok());
        assert!("DONE".parse::<Status>().is_err());
    }
}
