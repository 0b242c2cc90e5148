//! A `loom` model of percore's wakeup protocol (DESIGN.md "Wakeups";
//! `engine/mesh/wake.rs`). The flags under test are the engine's own source,
//! compiled here against loom's atomics; the rings and doorbells around them
//! are small stand-ins (`model.rs`): an SPSC ring of capacity 1 or 2 with
//! rtrb's orderings, and a doorbell that counts rings like the eventfd and
//! blocks like `ppoll` — without the engine's 50 ms park timeout, so a lost
//! wakeup shows as a deadlock that loom reports.
//!
//! Built only with `--cfg loom` (see Cargo.toml).
#![cfg(loom)]

// The engine's own `engine/mesh/` files, the parts the model needs, at the
// crate root so that `wake.rs`'s `super::shim` finds its shim.
// The model uses a subset of them.
#[allow(dead_code)]
#[path = "../../engine/mesh/shim.rs"]
pub(crate) mod shim;
#[allow(dead_code)]
#[path = "../../engine/mesh/wake.rs"]
pub(crate) mod wake;

#[cfg(test)]
mod model;
