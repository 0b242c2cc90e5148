//! Helpers shared by the `engine_*` integration tests: a builder preset for
//! small test engines, key pickers by shard, and hang guards (a channel
//! receive and a closure run) that turn an engine hang into a test failure.
//!
//! Each test binary uses a different subset of these, hence `dead_code`.
#![allow(dead_code)]

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use percore::{Ctx, Engine, EngineBuilder, Entity, IdlePolicy};

/// How long a test waits for something that must happen before it declares
/// the engine hung. Not a performance bound: it only turns a hang into a
/// failure with a message (the machine is small and shared, so it is large).
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// A builder for a test engine: `shards` shards (more than the machine's
/// cores allowed), shards that park when idle (no busy spinning on a shared
/// 2-core machine), and client sends that wait long enough for a descheduled
/// shard, so backpressure shows up as `Full` only where a test asks for it.
pub fn test_engine(shards: usize) -> EngineBuilder {
    Engine::builder()
        .shards(shards)
        .oversubscribe(true)
        .idle(IdlePolicy::Park)
        .send_wait(HANG_GUARD)
}

/// The first `count` keys (counting up from `start`) of kind `E` whose home is
/// `shard`.
pub fn keys_on_shard<E: Entity>(
    engine: &Engine,
    shard: usize,
    start: u64,
    count: usize,
) -> Vec<u64> {
    (start..)
        .filter(|&key| engine.shard_of::<E>(key) == Some(shard))
        .take(count)
        .collect()
}

/// Receives from `rx`, failing the test (instead of hanging it) if nothing
/// arrives within [`HANG_GUARD`].
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(HANG_GUARD) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("engine hung: no {what} within {HANG_GUARD:?}"),
        Err(RecvTimeoutError::Disconnected) => {
            panic!("{what}: every sender was dropped without sending")
        }
    }
}

/// Runs `f` on its own thread and returns its result, failing the test
/// (instead of hanging it) if `f` does not finish within [`HANG_GUARD`]. On
/// failure the stuck thread is left behind; the test binary exits anyway.
pub fn guarded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG_GUARD) {
        Ok(v) => {
            worker.join().expect("guarded thread");
            v
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("engine hung: {what} did not finish within {HANG_GUARD:?}")
        }
        // The closure panicked: re-raise its panic here.
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
    }
}

/// Replies with the number it is sent.
pub struct Echo;

impl Entity for Echo {
    const KIND: &'static str = "common.echo";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Echo
    }

    fn handle(&mut self, n: u64, _ctx: &mut Ctx<'_, Self>) -> u64 {
        n
    }
}
