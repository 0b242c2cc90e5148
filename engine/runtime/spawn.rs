//! Starting a shard: its thread, pinned to its core, running a glommio
//! executor whose one task is the shard loop.

use std::fs::File;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use glommio::{LocalExecutorBuilder, Placement};
use percore_shards::driver::Envelope;
use rtrb::{Consumer, Producer};

use super::shard_loop::ShardLoop;
use crate::durability::ShardRecovery;
use crate::error::Error;
use crate::shared::Shared;

/// Everything a shard thread starts with.
pub(crate) struct ShardInit {
    pub(crate) index: usize,
    pub(crate) core: usize,
    pub(crate) shared: Arc<Shared>,
    /// `(from shard, ring)` for every other shard.
    pub(crate) inbound: Vec<(usize, Consumer<Envelope>)>,
    /// Ring to every other shard; `None` at this shard's own index.
    pub(crate) outbound: Vec<Option<Producer<Envelope>>>,
    /// The doorbell's eventfd, to wait on.
    pub(crate) doorbell: File,
    /// Recovered entities and where this shard's log continues (durable
    /// kinds only).
    pub(crate) recovery: Option<ShardRecovery>,
}

/// Starts shard `init.index` on its own thread. Reports on `ready` whether its
/// executor started.
pub(crate) fn spawn_shard(
    init: ShardInit,
    ready: mpsc::Sender<Result<(), Error>>,
) -> std::io::Result<JoinHandle<()>> {
    let name = format!("percore-shard-{}", init.index);
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let (index, core) = (init.index, init.core);
            let executor = LocalExecutorBuilder::new(Placement::Fixed(core))
                .name(&name)
                // The shard does no glommio storage I/O (the log has its own ring),
                // so the registered buffer stays at glommio's minimum.
                .io_memory(64 << 10)
                .ring_depth(64)
                .make();
            let executor = match executor {
                Ok(ex) => ex,
                Err(e) => {
                    let _ = ready.send(Err(executor_error(index, core, e)));
                    return;
                }
            };
            executor.run(async move {
                let doorbell = init.doorbell;
                let mut shard_loop =
                    ShardLoop::new(init.index, init.shared, init.inbound, init.outbound);
                if let Some(recovery) = init.recovery {
                    if let Err(e) = shard_loop.open_log(&recovery) {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
                let _ = ready.send(Ok(()));
                shard_loop.run(doorbell).await;
            });
        })
}

fn executor_error(shard: usize, core: usize, e: glommio::GlommioError<()>) -> Error {
    let text = e.to_string();
    let detail = if text.contains("memlock") || text.contains("MemLock") {
        format!(
            "{text}; raise the locked-memory limit to at least 512 KiB \
             (`ulimit -l`, or `memlock` in /etc/security/limits.conf)"
        )
    } else {
        text
    };
    Error::Executor {
        shard,
        core,
        detail,
    }
}
