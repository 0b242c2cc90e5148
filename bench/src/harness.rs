//! Threads, runtimes and small synchronisation tools shared by the system modules.
//!
//! Layout on the 2-core development machine: the sending side runs on
//! [`SENDER_CORE`], the receiving entity or actor on [`RECEIVER_CORE`]. Workloads with
//! two senders or two receivers use both cores for each role.
//!
//! tokio-based systems (tokio, kameo, ractor, actix) get one *current-thread* runtime
//! per core ([`CoreRuntime`], [`runtime_thread`]), tokio's documented thread-per-core
//! setup. A multi-thread runtime would let its work-stealing scheduler move the sender
//! and the receiver onto the same worker, so the figure would measure scheduling luck
//! instead of cross-core messaging. The `idle` workload is the exception: it uses each
//! system's default runtime, as a user would.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Instant;

/// The core the sending thread (client, room, request loop) is pinned to.
pub const SENDER_CORE: usize = 0;

/// The core the receiving entity or actor is pinned to, where the system lets us choose.
pub const RECEIVER_CORE: usize = 1;

/// Cores used by workloads that spread senders or receivers over the machine.
pub const CORES: [usize; 2] = [SENDER_CORE, RECEIVER_CORE];

/// Capacity of every bounded queue whose size the system lets us choose (rings,
/// channels, bounded mailboxes), so that no system is measured with a smaller buffer
/// than another. Unbounded mailboxes (ractor, actix `do_send`) stay unbounded: that is
/// how those systems are used.
pub const QUEUE_CAPACITY: usize = 1024;

/// Pins the calling thread to `core`.
///
/// If the core does not exist (a machine with one core), the thread stays unpinned
/// and a note goes to stderr once per process: the figures are then still produced,
/// just noisier.
pub fn pin(core: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core })
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        eprintln!("versus: could not pin a thread to core {core}; figures will be noisier");
    }
}

/// Spawns a named thread pinned to `core` running `f`.
///
/// # Panics
///
/// Panics if the OS refuses to create a thread.
pub fn spawn_on<T, F>(core: usize, name: &str, f: F) -> thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            pin(core);
            f()
        })
        .expect("spawn benchmark thread")
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread tokio runtime")
}

/// Runs `make()`'s future to completion on a fresh current-thread tokio runtime, in a
/// new thread pinned to `core`: the sending side of tokio-based systems.
///
/// `make` runs on that thread, so the future need not be `Send`.
pub fn runtime_thread<T, Fut, F>(core: usize, name: &str, make: F) -> thread::JoinHandle<T>
where
    T: Send + 'static,
    Fut: Future<Output = T>,
    F: FnOnce() -> Fut + Send + 'static,
{
    spawn_on(core, name, move || {
        current_thread_runtime().block_on(make())
    })
}

/// A current-thread tokio runtime driven by a thread pinned to one core: the receiving
/// side of tokio-based systems. Tasks spawned through [`CoreRuntime::handle`] (and
/// actors spawned while [`CoreRuntime::enter`] is held) run on that core.
///
/// Dropping it stops the runtime, dropping the tasks still on it.
pub struct CoreRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl CoreRuntime {
    /// Starts the runtime on a new thread pinned to `core`.
    ///
    /// # Panics
    ///
    /// Panics if the runtime or its thread cannot be created.
    pub fn start(core: usize) -> Self {
        let (handle_tx, handle_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = spawn_on(core, &format!("runtime-{core}"), move || {
            let runtime = current_thread_runtime();
            handle_tx
                .send(runtime.handle().clone())
                .expect("starter waits for the handle");
            let _ = runtime.block_on(stopped);
        });
        let handle = handle_rx.recv().expect("runtime thread sends its handle");
        Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Makes this runtime the calling thread's current one until the guard drops, so
    /// that `tokio::spawn` (which kameo's `spawn` uses) puts tasks on it.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.handle.enter()
    }

    /// Spawns `fut` on this runtime; its output can be waited for from any thread
    /// with [`Pending::wait`].
    pub fn spawn<F>(&self, fut: F) -> Pending<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        Pending(rx)
    }

    /// Spawns `fut` on this runtime and blocks the calling thread until it completes.
    ///
    /// # Panics
    ///
    /// Panics if the task panicked.
    pub fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(fut).wait()
    }
}

impl Drop for CoreRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The output of a task spawned with [`CoreRuntime::spawn`], to be waited for from a
/// plain thread.
pub struct Pending<T>(mpsc::Receiver<T>);

impl<T> Pending<T> {
    /// Blocks until the task completes and returns its output.
    ///
    /// # Panics
    ///
    /// Panics if the task panicked or its runtime was dropped first.
    pub fn wait(self) -> T {
        self.0.recv().expect("benchmark task completed")
    }
}

/// A countdown latch that remembers when it reached zero.
///
/// Receivers that cannot tell the driver directly that they are done (actors, entities)
/// call [`Countdown::arrive`] once each; the driver waits for the last one and takes the
/// instant it arrived as the end of the measurement, so its own wake-up latency is not
/// counted.
pub struct Countdown {
    left: AtomicUsize,
    finished_at: OnceLock<Instant>,
    lock: Mutex<()>,
    zero: Condvar,
}

impl Countdown {
    /// A latch that opens after `count` arrivals.
    pub fn new(count: usize) -> Self {
        Self {
            left: AtomicUsize::new(count),
            finished_at: OnceLock::new(),
            lock: Mutex::new(()),
            zero: Condvar::new(),
        }
    }

    /// Counts one arrival; the last one records the time and wakes the waiter.
    ///
    /// # Panics
    ///
    /// Panics (in debug builds) on more arrivals than the latch was made for.
    pub fn arrive(&self) {
        let before = self.left.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "more arrivals than the countdown expects");
        if before == 1 {
            let _ = self.finished_at.set(Instant::now());
            // Notify under the lock so a waiter between its check and its wait
            // cannot miss it.
            let _guard = self.lock.lock().expect("countdown lock");
            self.zero.notify_all();
        }
    }

    /// Blocks until every arrival happened and returns when the last one did.
    pub fn wait(&self) -> Instant {
        let mut guard = self.lock.lock().expect("countdown lock");
        while self.left.load(Ordering::Acquire) > 0 {
            guard = self.zero.wait(guard).expect("countdown lock");
        }
        drop(guard);
        *self.finished_at.wait()
    }
}

/// Busy-wait policy for systems that have no way to wait (rtrb): spin briefly, then
/// yield the core so that two threads sharing it both make progress.
#[derive(Default)]
pub struct Backoff {
    spins: u32,
}

/// Spins before [`Backoff::snooze`] starts yielding; a few microseconds, longer than a
/// cross-core round trip on the development machine.
const BACKOFF_SPINS_MAX: u32 = 128;

impl Backoff {
    /// A fresh backoff, spinning first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits a little: a spin-loop hint, or a `yield_now` once spinning went on for
    /// too long.
    pub fn snooze(&mut self) {
        if self.spins < BACKOFF_SPINS_MAX {
            self.spins += 1;
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }

    /// Starts spinning again (call after progress).
    pub fn reset(&mut self) {
        self.spins = 0;
    }
}

/// Marsaglia's xorshift64: the fast generator for random keys.
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (zero is replaced, xorshift never leaves zero).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..bound`, by multiply-shift (no division).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64() >> 32) * u128::from(bound)) >> 32) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn countdown_opens_after_every_arrival() {
        let latch = Arc::new(Countdown::new(3));
        let arrivals: Vec<_> = (0..3)
            .map(|_| {
                let latch = Arc::clone(&latch);
                thread::spawn(move || latch.arrive())
            })
            .collect();
        let finished = latch.wait();
        assert!(finished <= Instant::now());
        for arrival in arrivals {
            arrival.join().unwrap();
        }
    }

    #[test]
    fn xorshift_stays_below_its_bound() {
        let mut rng = XorShift::new(1);
        assert!((0..10_000).all(|_| rng.below(100_000) < 100_000));
    }

    #[test]
    fn core_runtime_runs_tasks() {
        let runtime = CoreRuntime::start(RECEIVER_CORE);
        assert_eq!(runtime.run(async { 40 + 2 }), 42);
    }
}
