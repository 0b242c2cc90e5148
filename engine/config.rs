//! Engine configuration: the builder's fields, loadable from TOML.
//!
//! ```toml
//! cores = "all"            # or a count: cores = 2, or a list: cores = [0, 1]
//! ring_capacity = 1024     # envelopes per ring, a power of two >= 2
//! max_clients = 64         # client handles alive at once
//! overflow_cap = 65536     # envelopes a shard may queue per destination
//! send_wait_us_max = 1000000
//! client_spin_us = 50
//! oversubscribe = false
//! idle = { policy = "spin_then_park", spin_us = 200 }   # or "park" / "poll"
//! data_dir = "/var/lib/mygame/percore"   # needed by durable kinds
//! durability = "synced"    # or "buffered" (survives a process crash) / "off"
//! segment_len_bytes = 67108864
//! checkpoint_len_bytes = 268435456
//! # moving hot entities off a busy shard (off by default; heat is always measured)
//! rebalance = { enabled = true, window_ms = 100, min_gap_percent = 20, sustain_windows = 3, max_moves_per_window = 4, cooldown_windows = 20, learn_routes = false }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Which cores run shards (one shard per listed core).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CoresRepr", into = "CoresRepr")]
pub enum Cores {
    /// Every core in the affinity mask of the thread that builds the engine.
    /// The default.
    All,
    /// The first `n` cores of that mask.
    Count(usize),
    /// Exactly these core ids, one shard each, in this order.
    List(Vec<usize>),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum CoresRepr {
    Word(String),
    Count(usize),
    List(Vec<usize>),
}

impl TryFrom<CoresRepr> for Cores {
    type Error = String;

    fn try_from(r: CoresRepr) -> Result<Self, String> {
        match r {
            CoresRepr::Word(w) if w == "all" => Ok(Cores::All),
            CoresRepr::Word(w) => Err(format!(
                "cores = {w:?}: expected \"all\", a count (cores = 2) or a list (cores = [0, 1])"
            )),
            CoresRepr::Count(n) => Ok(Cores::Count(n)),
            CoresRepr::List(l) => Ok(Cores::List(l)),
        }
    }
}

impl From<Cores> for CoresRepr {
    fn from(c: Cores) -> Self {
        match c {
            Cores::All => CoresRepr::Word("all".into()),
            Cores::Count(n) => CoresRepr::Count(n),
            Cores::List(l) => CoresRepr::List(l),
        }
    }
}

/// What a shard does when it has nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum IdlePolicy {
    /// Park at once: lowest CPU use, a wakeup (one syscall by the sender) after
    /// every idle spell. What tests use.
    Park,
    /// Keep polling for `spin_us` microseconds, then park. The default, with
    /// 200 µs (Seastar's bare-metal choice; it uses 2 ms under a hypervisor).
    SpinThenPark {
        /// Microseconds to poll before parking; at most 1 000 000.
        spin_us: u64,
    },
    /// Never park: lowest latency, one core fully busy per shard. For cores
    /// dedicated to the engine.
    Poll,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy::SpinThenPark { spin_us: 200 }
    }
}

/// Everything [`Engine::builder`](crate::Engine::builder) can set except the
/// entity kinds. Every field has a default; a TOML file may give any subset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Cores to run shards on. Default: [`Cores::All`].
    pub cores: Cores,
    /// Envelopes per ring (every shard-to-shard ring and each client's request
    /// and reply rings). A power of two, 2 ..= 1 048 576. Default 1024.
    pub ring_capacity: usize,
    /// Idle policy of every shard. Default: spin 200 µs, then park.
    pub idle: IdlePolicy,
    /// Client handles that may be alive at once, 1 ..= 4096. Each costs two
    /// rings per shard. Default 64.
    pub max_clients: usize,
    /// Envelopes a shard's handlers may leave waiting for one destination
    /// whose ring is full, before their sends fail with
    /// `SendError::Overflow`. 1 ..= 2^24. Default 65 536.
    pub overflow_cap: usize,
    /// Longest a client's `tell`/`ask` waits for room in a full ring before
    /// giving the message back, in microseconds. Default 1 000 000 (1 s).
    pub send_wait_us_max: u64,
    /// How long a client waiting for a reply polls before it parks, in
    /// microseconds (0 = park at once). At most 1 000 000. Default 50.
    pub client_spin_us: u64,
    /// Allow more shards than cores (shards share cores round-robin). Useful
    /// for tests and development machines; never for latency. Default false.
    pub oversubscribe: bool,
    /// Where durable kinds keep their logs (`DATA_DIR/shard-NNN/`). Required
    /// when a durable kind is registered; an existing directory is recovered
    /// at start. Default: none.
    pub data_dir: Option<PathBuf>,
    /// How far a durable change must get before its outputs are released:
    /// `synced` (fdatasync: survives power loss; the default), `buffered`
    /// (written: survives a crash of the process) or `off` (not written).
    pub durability: DurabilityLevel,
    /// Size of each preallocated log segment, 1 MiB ..= 1 GiB. Default 64 MiB.
    pub segment_len_bytes: u64,
    /// A shard checkpoints (rewrites its live durable entities to a fresh
    /// segment and deletes older ones) after appending this many bytes of
    /// records since its last checkpoint; at least `segment_len_bytes`.
    /// Default 256 MiB.
    pub checkpoint_len_bytes: u64,
    /// Heat windows and automatic rebalancing. Default: 100 ms windows,
    /// rebalancing off.
    pub rebalance: RebalanceConfig,
}

/// Heat measurement and the automatic rebalancer.
///
/// Every shard measures, per window, the share of time it spent handling
/// messages (its load) and each entity's messages (its heat, smoothed over
/// windows). With `enabled`, a shard whose load exceeds the least loaded
/// shard's by `min_gap_percent` points for `sustain_windows` windows in a row
/// moves its hottest movable entities there — about half the gap's worth, at
/// most `max_moves_per_window`, never one that alone outweighs that (it would
/// only move the hot spot), never one that arrived within `cooldown_windows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RebalanceConfig {
    /// Whether entities move automatically. Default false.
    pub enabled: bool,
    /// Length of a heat window in milliseconds, 1 ..= 60 000. Default 100.
    pub window_ms: u64,
    /// Load difference (percentage points of a window) that counts as
    /// clearly busier, 1 ..= 100. Default 20.
    pub min_gap_percent: u32,
    /// Windows in a row the difference must last, at least 1. Default 3.
    pub sustain_windows: u32,
    /// Most entities one shard moves per window, at least 1. Default 4.
    pub max_moves_per_window: u32,
    /// Windows an entity stays put after it arrived. Default 20.
    pub cooldown_windows: u32,
    /// Whether shards whose handlers send to a moved entity learn its shard
    /// and send there directly, instead of through its home (which forwards:
    /// one more ring hop). Default false: in `examples/plaza.rs` on two
    /// cores, learning raised the message latency with rebalancing on (p50
    /// about 150 → 250 µs; see docs/BENCHMARKS.md), because every delivery
    /// on a shard with learned routes takes the protocol's slower path.
    /// Worth trying with many shards, where the home is more often a third
    /// shard. Moves work either way.
    pub learn_routes: bool,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        RebalanceConfig {
            enabled: false,
            window_ms: 100,
            min_gap_percent: 20,
            sustain_windows: 3,
            max_moves_per_window: 4,
            cooldown_windows: 20,
            learn_routes: false,
        }
    }
}

impl RebalanceConfig {
    /// The policy the shards apply.
    pub(crate) fn policy(&self) -> percore_shards::driver::RebalancePolicy {
        percore_shards::driver::RebalancePolicy {
            enabled: self.enabled,
            min_gap: self.min_gap_percent as f32 / 100.0,
            sustain_windows: self.sustain_windows,
            max_moves_per_window: self.max_moves_per_window,
            cooldown_windows: self.cooldown_windows,
        }
    }
}

/// How far a durable change must get before its outputs are released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityLevel {
    /// Nothing is written (durable kinds behave like plain ones).
    Off,
    /// Written to the kernel: survives a crash of the process, not of the machine.
    Buffered,
    /// Written and `fdatasync`ed: survives power loss. The default.
    #[default]
    Synced,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cores: Cores::All,
            ring_capacity: 1024,
            idle: IdlePolicy::default(),
            max_clients: 64,
            overflow_cap: 65_536,
            send_wait_us_max: 1_000_000,
            client_spin_us: 50,
            oversubscribe: false,
            data_dir: None,
            durability: DurabilityLevel::Synced,
            segment_len_bytes: 64 << 20,
            checkpoint_len_bytes: 256 << 20,
            rebalance: RebalanceConfig::default(),
        }
    }
}

/// Upper bounds of the configuration, checked at start.
pub(crate) mod limits {
    pub const RING_CAPACITY_MAX: usize = 1 << 20;
    pub const MAX_CLIENTS_MAX: usize = 4096;
    pub const OVERFLOW_CAP_MAX: usize = 1 << 24;
    pub const SPIN_US_MAX: u64 = 1_000_000;
}

impl EngineConfig {
    /// Parses a TOML document.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the bad field.
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Config {
            field: "toml".into(),
            problem: e.to_string(),
        })
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read or parsed.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            field: "file".into(),
            problem: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::from_toml_str(&text)
    }

    /// The configuration as TOML.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("the configuration always serialises")
    }

    /// Checks every field's range (not the cores, which need the machine).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first bad field and what to change.
    pub fn validate(&self) -> Result<(), Error> {
        use limits::*;
        let bad = |field: &str, problem: String| {
            Err(Error::Config {
                field: field.into(),
                problem,
            })
        };
        let cap = self.ring_capacity;
        if !(2..=RING_CAPACITY_MAX).contains(&cap) || !cap.is_power_of_two() {
            return bad(
                "ring_capacity",
                format!("{cap} is not a power of two between 2 and {RING_CAPACITY_MAX}"),
            );
        }
        if self.max_clients == 0 || self.max_clients > MAX_CLIENTS_MAX {
            return bad(
                "max_clients",
                format!("{} is outside 1..={MAX_CLIENTS_MAX}", self.max_clients),
            );
        }
        if self.overflow_cap == 0 || self.overflow_cap > OVERFLOW_CAP_MAX {
            return bad(
                "overflow_cap",
                format!("{} is outside 1..={OVERFLOW_CAP_MAX}", self.overflow_cap),
            );
        }
        if self.client_spin_us > SPIN_US_MAX {
            return bad(
                "client_spin_us",
                format!("{} exceeds {SPIN_US_MAX}", self.client_spin_us),
            );
        }
        if let IdlePolicy::SpinThenPark { spin_us } = self.idle {
            if spin_us > SPIN_US_MAX {
                return bad("idle.spin_us", format!("{spin_us} exceeds {SPIN_US_MAX}"));
            }
        }
        if !(1 << 20..=1 << 30).contains(&self.segment_len_bytes) {
            return bad(
                "segment_len_bytes",
                format!("{} is outside 1 MiB ..= 1 GiB", self.segment_len_bytes),
            );
        }
        if self.checkpoint_len_bytes < self.segment_len_bytes {
            return bad(
                "checkpoint_len_bytes",
                format!(
                    "{} is below segment_len_bytes ({})",
                    self.checkpoint_len_bytes, self.segment_len_bytes
                ),
            );
        }
        let r = &self.rebalance;
        if !(1..=60_000).contains(&r.window_ms) {
            return bad(
                "rebalance.window_ms",
                format!("{} is outside 1..=60000", r.window_ms),
            );
        }
        if !(1..=100).contains(&r.min_gap_percent) {
            return bad(
                "rebalance.min_gap_percent",
                format!("{} is outside 1..=100", r.min_gap_percent),
            );
        }
        if r.sustain_windows == 0 {
            return bad("rebalance.sustain_windows", "0: must be at least 1".into());
        }
        if r.max_moves_per_window == 0 {
            return bad(
                "rebalance.max_moves_per_window",
                "0: must be at least 1 (set enabled = false to move nothing)".into(),
            );
        }
        match &self.cores {
            Cores::Count(0) => return bad("cores", "a count of 0 shards".into()),
            Cores::List(l) if l.is_empty() => return bad("cores", "an empty list".into()),
            Cores::List(l) => {
                let mut seen = l.clone();
                seen.sort_unstable();
                if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
                    return bad("cores", format!("core {} is listed twice", w[0]));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trips_every_field() {
        let cfg = EngineConfig {
            cores: Cores::List(vec![1, 0]),
            ring_capacity: 64,
            idle: IdlePolicy::SpinThenPark { spin_us: 20 },
            max_clients: 3,
            overflow_cap: 10,
            send_wait_us_max: 5,
            client_spin_us: 0,
            oversubscribe: true,
            data_dir: Some("/tmp/x".into()),
            durability: DurabilityLevel::Buffered,
            segment_len_bytes: 1 << 20,
            checkpoint_len_bytes: 1 << 21,
            rebalance: RebalanceConfig {
                enabled: true,
                window_ms: 7,
                min_gap_percent: 11,
                sustain_windows: 2,
                max_moves_per_window: 3,
                cooldown_windows: 5,
                learn_routes: true,
            },
        };
        let text = cfg.to_toml_string();
        assert_eq!(EngineConfig::from_toml_str(&text).unwrap(), cfg);
    }

    #[test]
    fn toml_accepts_the_documented_forms() {
        let cfg = EngineConfig::from_toml_str(
            "cores = \"all\"\nidle = { policy = \"park\" }\nring_capacity = 8\n",
        )
        .unwrap();
        assert_eq!(cfg.cores, Cores::All);
        assert_eq!(cfg.idle, IdlePolicy::Park);
        assert_eq!(cfg.ring_capacity, 8);
        assert_eq!(cfg.max_clients, 64, "unset fields keep their default");
        let cfg = EngineConfig::from_toml_str("cores = 2\nidle = { policy = \"poll\" }").unwrap();
        assert_eq!(cfg.cores, Cores::Count(2));
        assert_eq!(cfg.idle, IdlePolicy::Poll);
    }

    #[test]
    fn toml_rejects_unknown_fields_and_words() {
        for text in [
            "ring_capacty = 8",
            "cores = \"most\"",
            "idle = { policy = \"nap\" }",
        ] {
            let err = EngineConfig::from_toml_str(text).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let field_of = |cfg: EngineConfig| match cfg.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let base = EngineConfig::default;
        assert_eq!(
            field_of(EngineConfig {
                ring_capacity: 0,
                ..base()
            }),
            "ring_capacity"
        );
        assert_eq!(
            field_of(EngineConfig {
                ring_capacity: 100,
                ..base()
            }),
            "ring_capacity"
        );
        assert_eq!(
            field_of(EngineConfig {
                max_clients: 0,
                ..base()
            }),
            "max_clients"
        );
        assert_eq!(
            field_of(EngineConfig {
                overflow_cap: 0,
                ..base()
            }),
            "overflow_cap"
        );
        assert_eq!(
            field_of(EngineConfig {
                cores: Cores::Count(0),
                ..base()
            }),
            "cores"
        );
        assert_eq!(
            field_of(EngineConfig {
                cores: Cores::List(vec![0, 0]),
                ..base()
            }),
            "cores"
        );
        assert!(base().validate().is_ok());
    }
}
