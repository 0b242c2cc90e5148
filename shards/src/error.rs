//! Errors an entity's sends and asks can meet.

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
