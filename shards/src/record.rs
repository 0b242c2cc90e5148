//! The on-disk log record format (owned by the durability work).
