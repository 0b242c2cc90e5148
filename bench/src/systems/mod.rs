//! The systems `versus` compares, as a table of modules.
//!
//! Each module exposes a `SYSTEM` constant: its name and the workloads that make sense
//! for it, each mapped to a function that runs one repetition (in a fresh child
//! process) and returns its figures. To add a system, write `systems/<name>.rs` with
//! such a constant and add it to [`ALL`]; nothing else changes.
//!
//! Figures in the table are compared with the system named [`BASELINE`] when it is
//! among the systems that ran.

use crate::measure::Figure;
use crate::workload::{Scale, Workload};

pub mod actix;
pub mod crossbeam;
pub mod dashmap;
pub mod fsync;
pub mod kameo;
pub mod percore;
pub mod ractor;
pub mod rtrb;
pub mod tokio;

/// Runs one repetition of a workload on a system and returns what it measured.
pub type Run = fn(Scale) -> Vec<Figure>;

/// One entry of the table: a system and the workloads it runs.
pub struct System {
    /// Name on the command line and in the output.
    pub name: &'static str,
    /// The workloads this system runs; a workload missing here is skipped silently.
    pub workloads: &'static [(Workload, Run)],
}

impl System {
    /// The function running `workload` on this system, if it runs it.
    pub fn run(&self, workload: Workload) -> Option<Run> {
        self.workloads
            .iter()
            .find(|(w, _)| *w == workload)
            .map(|&(_, run)| run)
    }
}

/// The system every other one is compared with in the table.
pub const BASELINE: &str = "percore";

/// Every system, in the order they run and appear as table columns.
pub const ALL: &[System] = &[
    percore::SYSTEM,
    rtrb::SYSTEM,
    crossbeam::SYSTEM,
    tokio::SYSTEM,
    actix::SYSTEM,
    kameo::SYSTEM,
    ractor::SYSTEM,
    dashmap::SYSTEM,
    fsync::SYSTEM,
];

/// The system called `name`, if any.
pub fn find(name: &str) -> Option<&'static System> {
    ALL.iter().find(|system| system.name == name)
}
