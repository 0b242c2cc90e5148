//! Benchmarks of percore and the side-by-side comparison with its peers.
//!
//! The `versus` binary runs the same workloads on every system listed in
//! [`systems::ALL`], each (system, workload, repetition) in a fresh child process, and
//! prints one line per figure (`system workload metric value`) followed by a markdown
//! table with ratios against percore.
//!
//! The pieces:
//!
//! - [`workload`]: what each workload is, and how big it is in a quick or full run.
//!   Every system runs the same definition.
//! - [`systems`]: one module per system, each a table entry mapping the workloads that
//!   make sense for it to a function returning [`measure::Figure`]s. Adding a system is
//!   adding one module and one line to [`systems::ALL`].
//! - [`harness`]: pinned threads, per-core tokio runtimes, a countdown latch, a spin
//!   backoff and the xorshift generator, shared by the system modules.
//! - [`measure`]: clocks, resident memory, CPU time and latency histograms.
//! - [`scratch`]: scratch directories and the page cache, for the durable workloads.
//! - [`report`]: the plain figure lines and the markdown table.

pub mod harness;
pub mod measure;
pub mod report;
pub mod scratch;
pub mod systems;
pub mod workload;
