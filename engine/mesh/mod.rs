//! The ring mesh: the rings between shards and clients, and how a sender
//! wakes a receiver that parked.
//!
//! - `rings`: the N·(N−1) rtrb rings between shards (client rings are made
//!   by `crate::clients::registry`).
//! - `wake`: the wakeup protocol's flags (Seastar's; DESIGN.md "Wakeups"),
//!   model-checked by `loom/` through `shim` (std, or loom's atomics).
//! - `barrier`: the asymmetric store-load barriers the protocol rests on.
//! - `doorbell`: a shard's sleeping flag and eventfd; `parker`: a client's
//!   sleeping flag and wakers.
//! - `padded`: cache-line padding for the flags.

pub(crate) mod barrier;
pub(crate) mod doorbell;
pub(crate) mod padded;
pub(crate) mod parker;
pub(crate) mod rings;
pub(crate) mod shim;
pub(crate) mod wake;

pub(crate) use barrier::{heavy_barrier, init_barriers, light_barrier};
pub(crate) use doorbell::Doorbell;
pub(crate) use padded::CachePadded;
pub(crate) use parker::{thread_waker, Parker};
