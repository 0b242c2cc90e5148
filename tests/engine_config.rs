//! Configuration errors: each bad configuration fails at `build` (or when a
//! client is made) with its own error, naming what is wrong and what to
//! change — never a panic, never an engine that half runs. Checked against
//! the real machine (its cores and affinity mask); an io_uring that is
//! unavailable is covered by the unit tests of `engine/pin.rs`.

mod common;

use std::path::PathBuf;

use percore::{AskError, Ctx, Engine, EngineBuilder, Entity, Error, IdlePolicy, TellError};

use common::test_engine;

struct Counter;

impl Entity for Counter {
    const KIND: &'static str = "config.counter";
    type Msg = ();
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Counter
    }

    fn handle(&mut self, _msg: (), _ctx: &mut Ctx<'_, Self>) {}
}

/// Another type that claims `Counter`'s kind name.
struct Impostor;

impl Entity for Impostor {
    const KIND: &'static str = "config.counter";
    type Msg = ();
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Impostor
    }

    fn handle(&mut self, _msg: (), _ctx: &mut Ctx<'_, Self>) {}
}

/// A builder that would start a valid engine, for tests to spoil one field.
fn valid() -> EngineBuilder {
    Engine::builder()
        .shards(1)
        .idle(IdlePolicy::Park)
        .register::<Counter>()
}

fn build_err(builder: EngineBuilder) -> Error {
    match builder.build() {
        Ok(engine) => panic!("expected an error, got an engine: {engine:?}"),
        Err(e) => e,
    }
}

/// The field named by an `Error::Config`.
fn config_field(builder: EngineBuilder) -> String {
    match build_err(builder) {
        Error::Config { field, problem } => {
            assert!(!problem.is_empty(), "the problem is described");
            field
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[test]
fn the_valid_baseline_builds() {
    let engine = valid().build().unwrap();
    assert_eq!(engine.shard_count(), 1);
    engine.shutdown().unwrap();
}

#[test]
fn core_that_does_not_exist_is_unavailable() {
    let err = build_err(valid().cores([0, 999]));
    match &err {
        Error::CoreUnavailable { core, available } => {
            assert_eq!(*core, 999);
            assert!(!available.is_empty() && !available.contains(&999));
        }
        other => panic!("expected CoreUnavailable, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("999") && text.contains("affinity"), "{text}");
}

#[test]
fn more_shards_than_cores_without_oversubscribe_is_refused() {
    let err = build_err(valid().shards(4096));
    match &err {
        Error::TooManyShards {
            requested,
            available,
        } => {
            assert_eq!(*requested, 4096);
            assert!((1..4096).contains(available));
        }
        other => panic!("expected TooManyShards, got {other:?}"),
    }
    assert!(err.to_string().contains("oversubscribe"), "{err}");
}

#[test]
fn more_shards_than_cores_with_oversubscribe_builds() {
    let engine = test_engine(3).register::<Counter>().build().unwrap();
    assert_eq!(engine.shard_count(), 3);
    engine.shutdown().unwrap();
}

#[test]
fn ring_capacity_zero_is_refused() {
    assert_eq!(config_field(valid().ring_capacity(0)), "ring_capacity");
}

#[test]
fn ring_capacity_not_a_power_of_two_is_refused() {
    assert_eq!(config_field(valid().ring_capacity(3)), "ring_capacity");
}

#[test]
fn ring_capacity_above_the_maximum_is_refused() {
    assert_eq!(
        config_field(valid().ring_capacity(1 << 21)),
        "ring_capacity"
    );
}

#[test]
fn max_clients_zero_is_refused() {
    assert_eq!(config_field(valid().max_clients(0)), "max_clients");
}

#[test]
fn overflow_cap_zero_is_refused() {
    assert_eq!(config_field(valid().overflow_cap(0)), "overflow_cap");
}

#[test]
fn zero_shards_and_repeated_cores_are_refused() {
    assert_eq!(config_field(valid().shards(0)), "cores");
    assert_eq!(config_field(valid().cores([0, 0])), "cores");
    assert_eq!(config_field(valid().cores([])), "cores");
}

#[test]
fn two_kinds_with_one_name_are_refused() {
    let err = build_err(valid().register::<Impostor>());
    assert!(
        matches!(
            err,
            Error::DuplicateKind {
                name: "config.counter"
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_engine_with_no_kinds_is_refused() {
    let err = build_err(Engine::builder().shards(1).idle(IdlePolicy::Park));
    assert!(matches!(err, Error::NoKinds), "{err:?}");
    assert!(err.to_string().contains("register"), "{err}");
}

#[test]
fn one_client_too_many_is_refused() {
    let engine = valid().max_clients(2).build().unwrap();
    let first = engine.client().unwrap();
    let second = engine.client().unwrap();
    assert_ne!(first.slot(), second.slot());
    let err = engine.client().unwrap_err();
    assert!(matches!(err, Error::TooManyClients { max: 2 }), "{err:?}");
    assert!(err.to_string().contains("max_clients"), "{err}");
    // The refusal leaves the two clients working.
    first.tell::<Counter>(1, ()).unwrap();
    second.tell::<Counter>(1, ()).unwrap();
}

/// A kind nobody registered.
struct Stranger;

impl Entity for Stranger {
    const KIND: &'static str = "config.stranger";
    type Msg = u64;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Stranger
    }

    fn handle(&mut self, _msg: u64, _ctx: &mut Ctx<'_, Self>) {}
}

#[test]
fn sending_to_an_unregistered_kind_hands_the_message_back() {
    let engine = valid().build().unwrap();
    let client = engine.client().unwrap();
    assert_eq!(engine.shard_of::<Stranger>(1), None);
    assert!(matches!(
        client.tell::<Stranger>(1, 42),
        Err(TellError::UnknownKind(42))
    ));
    assert!(matches!(
        client.try_tell::<Stranger>(1, 43),
        Err(TellError::UnknownKind(43))
    ));
    assert_eq!(
        client.ask::<Stranger>(1, 44).map_err(AskError::from),
        Err(AskError::UnknownKind)
    );
}

/// A TOML file in the temporary directory, removed when dropped.
struct TempToml(PathBuf);

impl TempToml {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "percore-engine-config-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempToml(path)
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn config_file_with_an_unknown_field_is_refused() {
    let file = TempToml::new("unknown", "cores = 1\nring_capacty = 8\n");
    let Err(err) = Engine::builder().register::<Counter>().config_file(&file.0) else {
        panic!("a misspelt field was accepted");
    };
    match &err {
        Error::Config { problem, .. } => assert!(problem.contains("ring_capacty"), "{err}"),
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[test]
fn config_file_that_does_not_exist_is_refused() {
    let path = std::env::temp_dir().join("percore-engine-config-does-not-exist.toml");
    let Err(err) = Engine::builder().config_file(&path) else {
        panic!("a missing file was accepted");
    };
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "file"),
        "{err:?}"
    );
}

#[test]
fn config_file_with_a_bad_value_fails_at_build() {
    let file = TempToml::new("bad-value", "cores = 1\nring_capacity = 3\n");
    let Ok(builder) = Engine::builder().register::<Counter>().config_file(&file.0) else {
        panic!("the file parses; its value is checked at build");
    };
    assert_eq!(config_field(builder), "ring_capacity");
}

#[test]
fn config_file_with_valid_fields_configures_the_engine() {
    let file = TempToml::new(
        "valid",
        "cores = 1\nring_capacity = 8\nmax_clients = 3\nidle = { policy = \"park\" }\n",
    );
    let Ok(builder) = Engine::builder().register::<Counter>().config_file(&file.0) else {
        panic!("a valid file was refused");
    };
    let engine = builder.build().unwrap();
    assert_eq!(engine.shard_count(), 1);
    assert_eq!(engine.config().ring_capacity, 8);
    assert_eq!(engine.config().max_clients, 3);
    assert_eq!(engine.config().idle, IdlePolicy::Park);
    engine.shutdown().unwrap();
}
