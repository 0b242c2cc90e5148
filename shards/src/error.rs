//! Layer 0, vocabulary: every error of the crate, as values with structure:
//! what an entity's sends and asks can meet ([`AskError`], [`SendError`]), why
//! a durable state does not decode ([`DecodeError`]), why a recovered entity
//! could not be restored ([`RestoreError`]), and a kind registered twice
//! ([`DuplicateKind`]).

use std::fmt;

/// Why an ask got no reply. An ask always ends in exactly one reply or one of
/// these.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AskError {
    /// The entity's handler (or its activation) panicked while handling the
    /// ask. The entity was dropped; its next message activates it afresh.
    Panicked,
    /// The engine is shutting down (or has shut down) and took no new work.
    ShuttingDown,
    /// The kind asked was never registered with the engine.
    UnknownKind,
    /// The ring to the entity's shard stayed full for the whole wait the
    /// caller allowed; the request was not sent.
    Full,
    /// No reply came within the timeout the caller asked for. The request may
    /// still be handled; its late reply is discarded.
    Timeout,
    /// The handler's outgoing queue to the target shard is at its cap; the
    /// request was not sent.
    Overflow,
    /// The entity's change could not be logged because the disk is full; the
    /// entity is back at its last durable state. Retrying later may succeed.
    StorageFull,
    /// The entity's change could not be logged (the shard's log failed to sync
    /// and is poisoned); the entity is back at its last durable state.
    StorageFailed,
}

impl AskError {
    /// Wire code (never 0, which means "no error").
    pub const fn code(self) -> u8 {
        match self {
            AskError::Panicked => 1,
            AskError::ShuttingDown => 2,
            AskError::UnknownKind => 3,
            AskError::Full => 4,
            AskError::Timeout => 5,
            AskError::Overflow => 6,
            AskError::StorageFull => 7,
            AskError::StorageFailed => 8,
        }
    }

    /// Inverse of [`AskError::code`]; `None` for 0 and unknown codes.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => AskError::Panicked,
            2 => AskError::ShuttingDown,
            3 => AskError::UnknownKind,
            4 => AskError::Full,
            5 => AskError::Timeout,
            6 => AskError::Overflow,
            7 => AskError::StorageFull,
            8 => AskError::StorageFailed,
            _ => return None,
        })
    }
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AskError::Panicked => "the entity's handler panicked; the entity was restarted",
            AskError::ShuttingDown => "the engine is shutting down",
            AskError::UnknownKind => "the entity kind is not registered with the engine",
            AskError::Full => "the ring to the entity's shard stayed full for the allowed wait",
            AskError::Timeout => "no reply within the requested timeout",
            AskError::Overflow => "the outgoing queue to the entity's shard is at its cap",
            AskError::StorageFull => {
                "the change could not be logged: the disk is full (retry later)"
            }
            AskError::StorageFailed => {
                "the change could not be logged: the shard's log failed and is poisoned"
            }
        })
    }
}

impl std::error::Error for AskError {}

/// Why a send from a handler failed. Hands the message back.
#[non_exhaustive]
#[derive(PartialEq, Eq)]
pub enum SendError<M> {
    /// The queue of messages waiting for the ring to the target shard holds
    /// `overflow_cap` messages already (see the engine's configuration).
    Overflow(M),
    /// The target kind was never registered with the engine.
    UnknownKind(M),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Overflow(m) | SendError::UnknownKind(m) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Overflow(_) => f.write_str("Overflow(..)"),
            SendError::UnknownKind(_) => f.write_str("UnknownKind(..)"),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Overflow(_) => f.write_str(
                "the outgoing queue to the target shard is at its cap (raise `overflow_cap` or send less per pass)",
            ),
            SendError::UnknownKind(_) => f.write_str("the target kind is not registered with the engine"),
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Why bytes are not a valid durable state: what
/// [`DurableState::decode`](crate::DurableState::decode) returns. Build one
/// from a message that says what was wrong with the bytes.
///
/// # Example
///
/// ```
/// use percore_shards::DecodeError;
///
/// let err = DecodeError::new("3 bytes, expected 8");
/// assert_eq!(err.to_string(), "3 bytes, expected 8");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError {
            message: message.into(),
        }
    }

    /// What was wrong with the bytes.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for DecodeError {
    fn from(message: String) -> Self {
        DecodeError { message }
    }
}

impl From<&str> for DecodeError {
    fn from(message: &str) -> Self {
        DecodeError::new(message)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Why a recovered entity could not be put back in its shard
/// ([`Shard::restore`](crate::driver::Shard::restore)).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// No registered kind's name hashes to `kind_hash`: the program that
    /// wrote the log registered a kind this one does not.
    UnknownKind {
        /// The kind hash found in the log.
        kind_hash: u64,
    },
    /// The kind is registered, but not as durable.
    NotDurable {
        /// The kind's name.
        kind: &'static str,
    },
    /// The same entity was recovered twice (a bug in the recovery fold).
    Duplicate {
        /// The kind's name.
        kind: &'static str,
        /// The entity's key.
        key: u64,
    },
    /// The state's bytes do not decode.
    Decode {
        /// The kind's name.
        kind: &'static str,
        /// The entity's key.
        key: u64,
        /// Why the bytes are not a state.
        source: DecodeError,
    },
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::UnknownKind { kind_hash } => write!(
                f,
                "no registered kind has hash {kind_hash:#x} (register every durable kind the log holds)"
            ),
            RestoreError::NotDurable { kind } => write!(
                f,
                "kind {kind:?} has records in the log but is not registered as durable"
            ),
            RestoreError::Duplicate { kind, key } => {
                write!(f, "entity {key} of kind {kind:?} was recovered twice")
            }
            RestoreError::Decode { kind, key, source } => write!(
                f,
                "the state of entity {key} of kind {kind:?} does not decode: {source}"
            ),
        }
    }
}

impl std::error::Error for RestoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RestoreError::Decode { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Two registrations under one kind name (or the same type twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKind {
    /// The name registered twice.
    pub name: &'static str,
}

impl fmt::Display for DuplicateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "entity kind name {:?} is registered twice; every kind needs its own `KIND` name",
            self.name
        )
    }
}

impl std::error::Error for DuplicateKind {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_zero_is_no_error() {
        for e in [
            AskError::Panicked,
            AskError::ShuttingDown,
            AskError::UnknownKind,
            AskError::Full,
            AskError::Timeout,
            AskError::Overflow,
            AskError::StorageFull,
            AskError::StorageFailed,
        ] {
            assert_ne!(e.code(), 0);
            assert_eq!(AskError::from_code(e.code()), Some(e));
        }
        assert_eq!(AskError::from_code(0), None);
    }
}
