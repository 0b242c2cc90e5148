//! `Engine` and its builder: start shards on their cores, hand out clients,
//! read metrics, shut down.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use percore_shards::{Codec, DurableState, Entity, Kinds};

use crate::clients::registry;
use crate::clients::Client;
use crate::config::{Cores, DurabilityLevel, EngineConfig, IdlePolicy};
use crate::durability::{self, RecoveryReport};
use crate::error::Error;
use crate::mesh::{init_barriers, rings, Doorbell};
use crate::metrics::Metrics;
use crate::pin;
use crate::runtime::{spawn_shard, ShardInit};
use crate::shared::Shared;

/// Most shards one engine runs: the one limit of `percore-shards`.
pub use percore_shards::MAX_SHARDS;
const _: () = assert!(
    MAX_SHARDS <= u128::BITS as usize,
    "client batches track shards in a u128"
);

/// Configures and starts an [`Engine`]. Every setter documents its default and
/// range; ranges are checked by [`EngineBuilder::build`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct EngineBuilder {
    config: EngineConfig,
    kinds: Kinds,
    duplicate: Option<&'static str>,
}

impl EngineBuilder {
    fn new() -> Self {
        EngineBuilder {
            config: EngineConfig::default(),
            kinds: Kinds::new(),
            duplicate: None,
        }
    }

    /// Replaces the whole configuration (for example one read with
    /// [`EngineConfig::from_toml_file`]). Registered kinds are kept.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Reads the configuration from a TOML file (see [`EngineConfig`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the file cannot be read or parsed.
    pub fn config_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(self.config(EngineConfig::from_toml_file(path)?))
    }

    /// Runs one shard on each of these cores, in this order. Default: every
    /// core the process may use.
    pub fn cores(mut self, cores: impl IntoIterator<Item = usize>) -> Self {
        self.config.cores = Cores::List(cores.into_iter().collect());
        self
    }

    /// Runs `n` shards on the first `n` cores the process may use (1 ..= the
    /// number of cores, or up to 128 with [`EngineBuilder::oversubscribe`]).
    pub fn shards(mut self, n: usize) -> Self {
        self.config.cores = Cores::Count(n);
        self
    }

    /// Envelopes per ring: a power of two, 2 ..= 1 048 576. Default 1024.
    pub fn ring_capacity(mut self, capacity: usize) -> Self {
        self.config.ring_capacity = capacity;
        self
    }

    /// What idle shards do. Default: spin 200 µs, then park.
    pub fn idle(mut self, idle: IdlePolicy) -> Self {
        self.config.idle = idle;
        self
    }

    /// Client handles alive at once, 1 ..= 4096. Default 64.
    pub fn max_clients(mut self, n: usize) -> Self {
        self.config.max_clients = n;
        self
    }

    /// Envelopes a shard may queue for one destination whose ring is full
    /// before handler sends fail, 1 ..= 2^24. Default 65 536.
    pub fn overflow_cap(mut self, n: usize) -> Self {
        self.config.overflow_cap = n;
        self
    }

    /// Longest a client send waits for room in a full ring. Default 1 s.
    pub fn send_wait(mut self, wait: Duration) -> Self {
        self.config.send_wait_us_max = wait.as_micros().min(u64::MAX as u128) as u64;
        self
    }

    /// How long a client polls for a reply before parking, 0 ..= 1 s.
    /// Default 50 µs.
    pub fn client_spin(mut self, spin: Duration) -> Self {
        self.config.client_spin_us = spin.as_micros().min(u64::MAX as u128) as u64;
        self
    }

    /// Allow more shards than cores. Default false.
    pub fn oversubscribe(mut self, yes: bool) -> Self {
        self.config.oversubscribe = yes;
        self
    }

    /// Heat windows and the automatic rebalancer (see [`RebalanceConfig`](crate::RebalanceConfig)).
    /// Default: 100 ms windows, rebalancing off.
    pub fn rebalance(mut self, rebalance: crate::RebalanceConfig) -> Self {
        self.config.rebalance = rebalance;
        self
    }

    /// Keeps durable kinds' logs under `dir` (created if missing; recovered if
    /// it holds logs). Required by durable kinds. Default: none.
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    /// How far a durable change must get before its outputs are released.
    /// Default: [`DurabilityLevel::Synced`].
    pub fn durability(mut self, level: DurabilityLevel) -> Self {
        self.config.durability = level;
        self
    }

    /// Registers durable kind `E`, whose state encodes through
    /// [`DurableState`]. Its changes are logged; after a crash it comes back
    /// at its last durable state. Needs [`EngineBuilder::data_dir`].
    pub fn register_durable<E: DurableState>(self) -> Self {
        self.register_with(Some(Codec::<E>::of_state()))
    }

    /// Registers durable kind `E` whose state is plain old data: its bytes
    /// are logged as they are (no encoding to write).
    pub fn register_durable_pod<E: Entity + bytemuck::Pod>(self) -> Self {
        self.register_with(Some(Codec::<E>::of_pod()))
    }

    fn register_with<E: Entity>(mut self, codec: Option<Codec<E>>) -> Self {
        let added = match codec {
            Some(codec) => self.kinds.register_durable::<E>(codec),
            None => self.kinds.register::<E>(),
        };
        if added.is_err() && self.duplicate.is_none() {
            self.duplicate = Some(E::KIND);
        }
        self
    }

    /// Registers entity kind `E`. A second kind with the same
    /// [`Entity::KIND`] makes [`EngineBuilder::build`] fail with
    /// [`Error::DuplicateKind`].
    pub fn register<E: Entity>(self) -> Self {
        self.register_with::<E>(None)
    }

    /// Checks the configuration and the machine, then starts one pinned
    /// thread per shard and waits until every executor runs.
    ///
    /// # Errors
    ///
    /// [`Error::Config`], [`Error::CoreUnavailable`], [`Error::TooManyShards`],
    /// [`Error::DuplicateKind`], [`Error::NoKinds`],
    /// [`Error::IoUringUnavailable`], [`Error::Executor`], [`Error::Io`],
    /// and for durable kinds [`Error::DataDirNotADirectory`],
    /// [`Error::DataDir`], [`Error::DataDirLocked`], [`Error::Log`],
    /// [`Error::Recovery`]: each says what to change.
    pub fn build(self) -> Result<Engine, Error> {
        if let Some(name) = self.duplicate {
            return Err(Error::DuplicateKind { name });
        }
        if self.kinds.is_empty() {
            return Err(Error::NoKinds);
        }
        self.config.validate()?;
        let cores = pin::plan_cores(
            &self.config.cores,
            &pin::available_cores(),
            &pin::schedulable_cores(),
            self.config.oversubscribe,
        )?;
        if cores.len() > MAX_SHARDS {
            return Err(Error::Config {
                field: "cores".into(),
                problem: format!("{} shards exceed the maximum of {MAX_SHARDS}", cores.len()),
            });
        }
        pin::check_io_uring()?;
        init_barriers();
        let recovery = match (&self.config.data_dir, self.kinds.any_durable()) {
            (Some(dir), true) => Some(durability::recover(dir, &self.kinds, cores.len())?),
            (None, true) => {
                return Err(Error::Config {
                    field: "data_dir".into(),
                    problem: "durable kinds are registered but no data directory is set; \
                              call `.data_dir(path)` or set `data_dir` in the file"
                        .into(),
                })
            }
            (_, false) => None,
        };
        Engine::start(self.config, cores, self.kinds, recovery)
    }
}

/// A running engine: one shard per configured core.
///
/// Dropping it shuts it down (see [`Engine::shutdown`]); call `shutdown` to
/// see the errors.
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    recovery: RecoveryReport,
    /// The data directory's lock, held while the engine lives (durable kinds).
    _data_dir_lock: Option<Arc<durability::DataDirLock>>,
}

impl Engine {
    /// A builder with the default configuration and no kinds.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }

    /// Starts the shards of a checked configuration: the ring mesh and
    /// doorbells, the shared state, then one pinned thread per shard; waits
    /// until every executor runs (or one failed, and stops the others).
    fn start(
        config: EngineConfig,
        cores: Vec<usize>,
        kinds: Kinds,
        recovery: Option<(Vec<durability::ShardRecovery>, RecoveryReport)>,
    ) -> Result<Engine, Error> {
        let n = cores.len();
        let (outbound, inbound) = rings::shard_mesh(n, config.ring_capacity);
        let (doorbells, bell_reads) = doorbells(n)?;
        let shared = Arc::new(Shared::new(config, cores, kinds, doorbells));
        let (plans, report) = match recovery {
            Some((plans, report)) => (plans.into_iter().map(Some).collect(), report),
            None => ((0..n).map(|_| None).collect::<Vec<_>>(), report_none()),
        };
        let mut engine = Engine {
            shared: shared.clone(),
            threads: Vec::with_capacity(n),
            recovery: report,
            _data_dir_lock: durability::DataDirLock::of(&plans),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let inits = outbound
            .into_iter()
            .zip(inbound)
            .zip(bell_reads)
            .zip(plans)
            .enumerate();
        for (index, (((outbound, inbound), doorbell), recovery)) in inits {
            let init = ShardInit {
                index,
                core: shared.cores[index],
                shared: shared.clone(),
                inbound,
                outbound,
                doorbell,
                recovery,
            };
            let thread = spawn_shard(init, ready_tx.clone()).map_err(|source| Error::Io {
                context: "spawning a shard thread",
                source,
            })?;
            engine.threads.push(thread);
        }
        drop(ready_tx);
        match first_start_error(&ready_rx, n) {
            None => Ok(engine),
            Some(e) => {
                // Stop the shards that did start; the error to report is `e`.
                let _ = engine.stop();
                Err(e)
            }
        }
    }

    /// What recovery found at start (all zero without durable kinds or logs).
    pub fn recovery(&self) -> RecoveryReport {
        self.recovery
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shared.shard_count()
    }

    /// The core of each shard, by shard index.
    pub fn cores(&self) -> &[usize] {
        &self.shared.cores
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The shard that owns `key` of kind `E`, or `None` if `E` is not registered.
    pub fn shard_of<E: Entity>(&self, key: u64) -> Option<usize> {
        let kind = self.shared.kinds.id_of::<E>()?;
        Some(self.shared.kinds.home_shard(kind, key, self.shard_count()))
    }

    /// A new client handle (one per thread that sends).
    ///
    /// A dropped client's slot is freed once every shard has handled what it
    /// sent; when no slot is free but one is being freed, this waits for it
    /// (up to a second, in case a shard is busy in a long handler), so
    /// `drop(client); engine.client()` succeeds with `max_clients(1)`.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyClients`] when `max_clients` handles are alive (or a
    /// dropped one's slot was not freed within the wait);
    /// [`Error::ShuttingDown`].
    pub fn client(&self) -> Result<Client, Error> {
        registry::register(&self.shared)
    }

    /// A snapshot of every shard's counters. Shards publish at least every
    /// millisecond while busy and whenever they go idle.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            shards: self
                .shared
                .metrics
                .iter()
                .enumerate()
                .map(|(i, m)| m.snapshot(i, self.shared.cores[i]))
                .collect(),
        }
    }

    /// Each shard's hottest entities in its last completed heat window,
    /// hottest first (up to 16 per shard), by shard index.
    pub fn hottest(&self) -> Vec<Vec<crate::Hot>> {
        self.shared
            .hottest
            .iter()
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Migration pauses over the engine's life, all shards (published with
    /// the metrics, so at most a millisecond behind a busy shard).
    pub fn migration_pauses(&self) -> crate::PauseStats {
        let mut all = crate::shared::pause_histogram();
        for h in &self.shared.pauses {
            let h = h.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*h).expect("same bounds");
        }
        crate::PauseStats {
            count: all.len(),
            p50_ns: all.value_at_quantile(0.5),
            p99_ns: all.value_at_quantile(0.99),
            max_ns: all.max(),
        }
    }

    /// Stops taking new messages (clients get `ShuttingDown`), lets the shards
    /// handle everything already sent — including what handlers send while
    /// draining — then joins every thread. Timers that have not fired are
    /// dropped. Returns the final metrics.
    ///
    /// A handler that keeps messages circulating forever keeps shutdown
    /// waiting; shutdown ends when the engine is quiet.
    ///
    /// # Errors
    ///
    /// [`Error::ShardPanicked`] if a shard thread died outside a handler.
    pub fn shutdown(mut self) -> Result<Metrics, Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<Metrics, Error> {
        let shared = &self.shared;
        if self.threads.is_empty() {
            return Ok(self.metrics());
        }
        shared.stopping.store(true, Ordering::SeqCst);
        shared.slots.wake_all();
        shared.seal_clients();
        shared.sealed.store(true, Ordering::Release);
        for bell in &shared.doorbells {
            bell.force();
        }
        self.wait_quiescent();
        shared.terminate.store(true, Ordering::Release);
        for bell in &shared.doorbells {
            bell.force();
        }
        let mut result = Ok(());
        for (shard, thread) in self.threads.drain(..).enumerate() {
            if let Err(panic) = thread.join() {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                if result.is_ok() {
                    result = Err(Error::ShardPanicked { shard, message });
                }
            }
        }
        shared.terminated.store(true, Ordering::Release);
        shared.wake_all_clients();
        result.map(|()| self.metrics())
    }

    /// Waits until every shard is idle and every envelope sent between shards
    /// has been received, seen twice in a row with nothing changed.
    fn wait_quiescent(&self) {
        let q = &self.shared.quiescence;
        let collect = || -> Option<Vec<(u64, u64)>> {
            q.iter()
                .map(|c| {
                    c.idle.load(Ordering::Acquire).then(|| {
                        (
                            c.sent.load(Ordering::Relaxed),
                            c.received.load(Ordering::Relaxed),
                        )
                    })
                })
                .collect()
        };
        let mut nap = Duration::from_micros(20);
        loop {
            if let Some(first) = collect() {
                let sent: u64 = first.iter().map(|c| c.0).sum();
                let received: u64 = first.iter().map(|c| c.1).sum();
                if sent == received && collect().as_ref() == Some(&first) {
                    return;
                }
            }
            if self.threads.iter().any(|t| t.is_finished()) {
                // A shard died; the others cannot reach quiescence with it.
                return;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }
}

/// The doorbells of `n` shards, and the eventfds the shards wait on.
fn doorbells(n: usize) -> Result<(Vec<Doorbell>, Vec<std::fs::File>), Error> {
    (0..n)
        .map(|_| Doorbell::new())
        .collect::<std::io::Result<Vec<_>>>()
        .map(|pairs| pairs.into_iter().unzip())
        .map_err(|source| Error::Io {
            context: "creating a doorbell eventfd",
            source,
        })
}

/// The recovery report of an engine without durable kinds.
fn report_none() -> RecoveryReport {
    RecoveryReport::default()
}

/// Waits for `n` shards to report on `ready`; the first error, if any (a
/// shard thread that died without reporting counts as one).
fn first_start_error(ready: &mpsc::Receiver<Result<(), Error>>, n: usize) -> Option<Error> {
    let mut first_error = None;
    for _ in 0..n {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(Error::ShardPanicked {
                    shard: usize::MAX,
                    message: "a shard thread died while starting".into(),
                });
            }
        }
    }
    first_error
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("percore engine shut down with an error: {e}");
        }
    }
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field("kinds", &self.kinds)
            .finish()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cores", &self.shared.cores)
            .field("kinds", &self.shared.kinds)
            .finish()
    }
}
