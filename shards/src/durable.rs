//! Layer 3, user API: durable kinds — how their states become bytes and back.
//! (What each entity remembers of its records is in `log::state`, the output
//! gate in `services::gate`, the interface to the log in [`LogSink`](crate::driver::LogSink).)
//!
//! The rules (contract point 6):
//! - after a handler of a durable kind returns, the entity is marked dirty;
//!   at the end of the runtime's pass every dirty entity whose encoding
//!   changed is appended once (changes within a pass coalesce);
//! - everything a durable handler emits (replies, tells, asks — to other
//!   shards, clients, or entities of its own shard) is held back until every
//!   record appended so far is durable (the output gate);
//! - a failed record (full disk, failed fsync) restores its entity to its last
//!   durable state and fails the held replies; held tells are dropped;
//! - a panicking durable handler puts its entity back to the state the last
//!   handler that returned left it in (its pre-image within the pass, else
//!   its last logged state), never past a change whose outputs were held;
//! - `Ctx::stop` on a durable entity deletes it (a tombstone is logged).

use crate::entity::Entity;
use crate::error::DecodeError;

/// How a durable kind's state becomes bytes and back. Implement it for states
/// that are not plain old data; `bytemuck::Pod` states need nothing (register
/// them with the engine's `register_durable_pod`).
pub trait DurableState: Entity {
    /// Appends the encoded state to `out` (which is empty).
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes a state encoded by [`DurableState::encode`] of entity `key`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] saying why the bytes are not a valid state;
    /// recovery stops with an error naming the entity.
    fn decode(key: u64, bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Encode and decode functions of one durable kind.
pub struct Codec<E> {
    /// Appends the state's encoding.
    pub encode: fn(&E, &mut Vec<u8>),
    /// Rebuilds a state.
    pub decode: fn(u64, &[u8]) -> Result<E, DecodeError>,
}

impl<E> Clone for Codec<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Codec<E> {}

impl<E: DurableState> Codec<E> {
    /// The codec of a [`DurableState`].
    pub fn of_state() -> Self {
        Codec {
            encode: |state, out| state.encode(out),
            decode: |key, bytes| E::decode(key, bytes),
        }
    }
}

impl<E: Entity + bytemuck::Pod> Codec<E> {
    /// The codec of a plain-old-data state: its bytes.
    pub fn of_pod() -> Self {
        Codec {
            encode: |state, out| out.extend_from_slice(bytemuck::bytes_of(state)),
            decode: |_, bytes| {
                bytemuck::try_pod_read_unaligned(bytes).map_err(|e| {
                    DecodeError::new(format!(
                        "{} bytes are not a {}: {e}",
                        bytes.len(),
                        std::any::type_name::<E>()
                    ))
                })
            },
        }
    }
}
