//! The engine's errors. Each says what was wrong and what to change.

use std::fmt;

use percore_shards::AskError;

/// Errors of building, running and shutting down an engine.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// A configuration field is out of range or malformed.
    Config {
        /// The field (`ring_capacity`, `cores`, …).
        field: String,
        /// What is wrong and what is accepted.
        problem: String,
    },
    /// A configured core does not exist or the process may not run on it.
    CoreUnavailable {
        /// The core asked for.
        core: usize,
        /// The cores the process may use (its affinity mask).
        available: Vec<usize>,
    },
    /// More shards were asked for than the process has cores.
    TooManyShards {
        /// Shards asked for.
        requested: usize,
        /// Cores the process may use.
        available: usize,
    },
    /// io_uring cannot be used by this process.
    IoUringUnavailable {
        /// What the kernel said.
        detail: String,
        /// How to enable it.
        hint: &'static str,
    },
    /// Two kinds registered under one name.
    DuplicateKind {
        /// The name.
        name: &'static str,
    },
    /// No entity kind was registered.
    NoKinds,
    /// A shard's executor could not start.
    Executor {
        /// The shard.
        shard: usize,
        /// Its core.
        core: usize,
        /// What failed, and how to fix it when known.
        detail: String,
    },
    /// All `max_clients` client handles are in use.
    TooManyClients {
        /// The configured maximum.
        max: usize,
    },
    /// The engine is shutting down or has shut down.
    ShuttingDown,
    /// A shard thread died of a panic outside any handler (an engine bug).
    ShardPanicked {
        /// The shard.
        shard: usize,
        /// The panic message.
        message: String,
    },
    /// The durable log could not be opened or recovered (corruption names the
    /// file and offset).
    Log(crate::log::LogError),
    /// Another engine, in this process or another, holds the data directory:
    /// two engines writing one directory would corrupt its logs.
    DataDirLocked {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The process holding it, as it wrote itself into the directory's
        /// `LOCK` file (`None` if that could not be read).
        pid: Option<u32>,
    },
    /// `data_dir` names something that is not a directory (a regular file,
    /// say).
    DataDirNotADirectory {
        /// The configured data directory.
        dir: std::path::PathBuf,
    },
    /// The data directory could not be created or opened.
    DataDir {
        /// The configured data directory.
        dir: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A recovered entity could not be restored (its state does not decode).
    Recovery {
        /// The shard.
        shard: usize,
        /// Which entity and why.
        detail: String,
    },
    /// An operating-system call failed at start.
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { field, problem } => {
                write!(f, "invalid configuration `{field}`: {problem}")
            }
            Error::CoreUnavailable { core, available } => write!(
                f,
                "core {core} is not available to this process (it may use cores {available:?}); \
                 list only those cores, or widen the affinity mask (taskset, cgroup cpuset)"
            ),
            Error::TooManyShards {
                requested,
                available,
            } => write!(
                f,
                "{requested} shards requested but the process may use only {available} cores; \
                 ask for at most {available}, or set `oversubscribe = true` to share cores"
            ),
            Error::IoUringUnavailable { detail, hint } => {
                write!(f, "io_uring is unavailable: {detail}; {hint}")
            }
            Error::DuplicateKind { name } => write!(
                f,
                "entity kind name {name:?} is registered twice; give every kind its own `KIND`"
            ),
            Error::NoKinds => f.write_str(
                "no entity kind registered; call `.register::<YourEntity>()` on the builder",
            ),
            Error::Executor {
                shard,
                core,
                detail,
            } => write!(f, "shard {shard} could not start on core {core}: {detail}"),
            Error::TooManyClients { max } => write!(
                f,
                "all {max} client handles are in use; drop unused clients or raise `max_clients`"
            ),
            Error::ShuttingDown => f.write_str("the engine is shutting down"),
            Error::ShardPanicked { shard, message } => {
                write!(f, "shard {shard} panicked outside a handler: {message}")
            }
            Error::Log(e) => write!(f, "durable log: {e}"),
            Error::DataDirLocked { dir, pid } => {
                write!(
                    f,
                    "data directory {} is in use by another engine",
                    dir.display()
                )?;
                match pid {
                    Some(pid) if *pid == std::process::id() => write!(f, " in this process")?,
                    Some(pid) => write!(f, " (process {pid})")?,
                    None => {}
                }
                write!(
                    f,
                    "; shut that engine down first, or give this one its own data_dir"
                )
            }
            Error::DataDirNotADirectory { dir } => write!(
                f,
                "data directory {} exists but is not a directory; point `data_dir` at a \
                 directory (it is created if missing), or move that file away",
                dir.display()
            ),
            Error::DataDir { dir, source } => write!(
                f,
                "data directory {} cannot be created: {source}; point `data_dir` at a \
                 directory this process may create and write (every parent must be a \
                 directory)",
                dir.display()
            ),
            Error::Recovery { shard, detail } => {
                write!(
                    f,
                    "shard {shard} could not restore a recovered entity: {detail}"
                )
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::DataDir { source, .. } => Some(source),
            Error::Log(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Client::migrate`](crate::Client::migrate) did not move an entity.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateError {
    /// There is no shard with that index.
    NoSuchShard {
        /// The shard asked for.
        shard: usize,
        /// How many shards the engine has.
        shard_count: usize,
    },
    /// The kind is not registered with the engine.
    UnknownKind,
    /// The entity pinned itself with [`Ctx::pin`](crate::Ctx::pin).
    Pinned,
    /// The entity was not active and activating it panicked.
    Panicked,
    /// The ring to its home shard stayed full for the allowed wait.
    Full,
    /// The engine is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrateError::NoSuchShard { shard, shard_count } => write!(
                f,
                "no shard {shard}: the engine has {shard_count} (0..{shard_count})"
            ),
            MigrateError::UnknownKind => {
                f.write_str("the entity kind is not registered with the engine")
            }
            MigrateError::Pinned => f.write_str("the entity pinned itself to its shard"),
            MigrateError::Panicked => f.write_str("activating the entity panicked"),
            MigrateError::Full => {
                f.write_str("the ring to the entity's home shard stayed full for the allowed wait")
            }
            MigrateError::ShuttingDown => f.write_str("the engine is shutting down"),
        }
    }
}

impl std::error::Error for MigrateError {}

/// Why a client's tell failed. Hands the message back.
#[non_exhaustive]
#[derive(PartialEq, Eq)]
pub enum TellError<M> {
    /// The ring to the entity's shard stayed full (at once for `try_tell`,
    /// for `send_wait_us_max` for `tell`).
    Full(M),
    /// The engine is shutting down or has shut down.
    ShuttingDown(M),
    /// The kind is not registered with this engine.
    UnknownKind(M),
}

impl<M> TellError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            TellError::Full(m) | TellError::ShuttingDown(m) | TellError::UnknownKind(m) => m,
        }
    }
}

impl<M> fmt::Debug for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TellError::Full(_) => "Full(..)",
            TellError::ShuttingDown(_) => "ShuttingDown(..)",
            TellError::UnknownKind(_) => "UnknownKind(..)",
        })
    }
}

impl<M> fmt::Display for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TellError::Full(_) => "the ring to the entity's shard is full",
            TellError::ShuttingDown(_) => "the engine is shutting down",
            TellError::UnknownKind(_) => "the entity kind is not registered with this engine",
        })
    }
}

impl<M> std::error::Error for TellError<M> {}

/// Why a client's ask failed. Hands the message back whenever it was not
/// sent (`Full`, `ShuttingDown`, `UnknownKind`); once it was sent, the
/// message belongs to the entity and only the reason comes back (`Failed`).
#[non_exhaustive]
#[derive(PartialEq, Eq)]
pub enum ClientAskError<M> {
    /// The ring to the entity's shard stayed full for `send_wait_us_max`;
    /// the request was not sent.
    Full(M),
    /// The engine was shutting down before the request was sent.
    ShuttingDown(M),
    /// The kind is not registered with this engine.
    UnknownKind(M),
    /// The request was sent and no reply came: the handler panicked, the
    /// engine shut down before replying, the caller's timeout passed, or a
    /// durable change failed (see [`AskError`]).
    Failed(AskError),
}

impl<M> ClientAskError<M> {
    /// The reason as an [`AskError`] (`Full`, `ShuttingDown`, `UnknownKind`
    /// or the reason of `Failed`).
    pub fn error(&self) -> AskError {
        match self {
            ClientAskError::Full(_) => AskError::Full,
            ClientAskError::ShuttingDown(_) => AskError::ShuttingDown,
            ClientAskError::UnknownKind(_) => AskError::UnknownKind,
            ClientAskError::Failed(e) => *e,
        }
    }

    /// The message, if it was never sent.
    pub fn into_message(self) -> Option<M> {
        match self {
            ClientAskError::Full(m)
            | ClientAskError::ShuttingDown(m)
            | ClientAskError::UnknownKind(m) => Some(m),
            ClientAskError::Failed(_) => None,
        }
    }

    /// Whether the message was never sent (and is in the error).
    pub fn is_unsent(&self) -> bool {
        !matches!(self, ClientAskError::Failed(_))
    }
}

impl<M> From<ClientAskError<M>> for AskError {
    /// Forgets the message (dropping it), keeping the reason.
    fn from(e: ClientAskError<M>) -> AskError {
        e.error()
    }
}

impl<M> From<TellError<M>> for ClientAskError<M> {
    fn from(e: TellError<M>) -> Self {
        match e {
            TellError::Full(m) => ClientAskError::Full(m),
            TellError::ShuttingDown(m) => ClientAskError::ShuttingDown(m),
            TellError::UnknownKind(m) => ClientAskError::UnknownKind(m),
        }
    }
}

impl<M> fmt::Debug for ClientAskError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAskError::Full(_) => f.write_str("Full(..)"),
            ClientAskError::ShuttingDown(_) => f.write_str("ShuttingDown(..)"),
            ClientAskError::UnknownKind(_) => f.write_str("UnknownKind(..)"),
            ClientAskError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<M> fmt::Display for ClientAskError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAskError::Failed(e) => fmt::Display::fmt(e, f),
            _ => write!(f, "{} (the message was not sent)", self.error()),
        }
    }
}

impl<M> std::error::Error for ClientAskError<M> {}

/// Why [`Client::tell_batch`](crate::Client::tell_batch) stopped: how many
/// messages it sent (a prefix of the batch, in order) and, in `unsent`, every
/// `(key, message)` after them, in batch order, beginning with the one that
/// could not be sent.
#[non_exhaustive]
#[derive(PartialEq, Eq)]
pub struct TellBatchError<M> {
    /// Messages sent before the failure (a prefix of the batch).
    pub sent: usize,
    /// Why sending stopped. Its payload is `()`: the messages are in
    /// `unsent`.
    pub reason: TellError<()>,
    /// The rest of the batch, in order, first the message that failed.
    pub unsent: Vec<(u64, M)>,
}

impl<M> TellBatchError<M> {
    /// The unsent rest of the batch, in order.
    pub fn into_unsent(self) -> Vec<(u64, M)> {
        self.unsent
    }
}

impl<M> fmt::Debug for TellBatchError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TellBatchError")
            .field("sent", &self.sent)
            .field("reason", &self.reason)
            .field("unsent", &self.unsent.len())
            .finish()
    }
}

impl<M> fmt::Display for TellBatchError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} after sending {} messages; {} handed back unsent",
            self.reason,
            self.sent,
            self.unsent.len()
        )
    }
}

impl<M> std::error::Error for TellBatchError<M> {}
