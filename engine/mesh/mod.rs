//! The ring mesh's signalling: the wakeup protocol's flags (`wake`) and what
//! they are built from (`shim`: std, or loom under the model in `loom/`).

pub(crate) mod shim;
pub(crate) mod wake;
