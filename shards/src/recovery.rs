//! The recovery fold (owned by the durability work).
