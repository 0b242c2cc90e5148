//! The per-shard durable log (owned by the durability work).
