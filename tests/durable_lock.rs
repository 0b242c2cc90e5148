//! The data directory's lock: one engine at a time, in this process or
//! another, recovers and writes a data directory. A second engine fails at
//! start with an error naming the directory and the process holding it; the
//! lock is released when the first engine shuts down, is dropped, or its
//! process dies.
//!
//! The other process is this test binary run again with `CHILD_ENV` set: the
//! test function then acts as the child and never returns.

mod common_durable;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use percore::{Engine, Error};

use common_durable::{durable_engine, guarded, Counter, DataDir};

/// Set (to the data directory) in the child's environment.
const CHILD_ENV: &str = "PERCORE_DURABLE_LOCK_CHILD";
/// This child test's name, for its command line.
const CHILD_TEST: &str = "an_engine_in_another_process_holds_the_data_directory_until_it_dies";
/// What the child prints once its engine runs and has logged its change.
const CHILD_READY: &str = "percore-lock-child-ready";

fn start(dir: &Path) -> Result<Engine, Error> {
    durable_engine(dir, 1, 1 << 30)
        .register_durable::<Counter>()
        .build()
}

/// Adds `n` to counter 0 and returns its value.
fn add(engine: &Engine, n: u64) -> u64 {
    engine.client().unwrap().ask::<Counter>(0, n).unwrap()
}

/// Asserts `result` is the lock error for `dir` held by process `pid`, and
/// that its message says so.
fn assert_locked(result: Result<Engine, Error>, dir: &Path, pid: u32) {
    let err = match result {
        Ok(_) => panic!("a second engine opened {} while in use", dir.display()),
        Err(err) => err,
    };
    let message = err.to_string();
    match err {
        Error::DataDirLocked {
            dir: locked,
            pid: holder,
        } => {
            assert_eq!(locked, dir);
            assert_eq!(holder, Some(pid));
        }
        other => panic!("expected DataDirLocked, got {other:?}"),
    }
    assert!(message.contains(&dir.display().to_string()), "{message}");
}

#[test]
fn a_second_engine_on_a_data_directory_in_use_fails_until_the_first_is_gone() {
    let dir = DataDir::new("lock");
    let path = dir.path().to_path_buf();
    guarded("engines taking turns on one directory", move || {
        let first = start(&path).expect("the first engine starts");
        assert_eq!(add(&first, 1), 1);
        let second = start(&path);
        assert_locked(second, &path, std::process::id());
        assert!(start(&path)
            .unwrap_err()
            .to_string()
            .contains("in use by another engine in this process"));
        // The refused engine changed nothing: the first one still runs.
        assert_eq!(add(&first, 1), 2);
        first.shutdown().unwrap();

        // Released at shutdown...
        let second = start(&path).expect("the lock is released at shutdown");
        assert_eq!(add(&second, 1), 3);
        assert!(start(&path).is_err());
        drop(second);
        // ... and when an engine is dropped.
        let third = start(&path).expect("the lock is released when an engine is dropped");
        assert_eq!(add(&third, 1), 4);
        third.shutdown().unwrap();
    });
}

#[test]
fn an_engine_in_another_process_holds_the_data_directory_until_it_dies() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
    let dir = DataDir::new("lock-process");
    let path = dir.path().to_path_buf();
    guarded("an engine in a child process", move || {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the child");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = lines.any(|line| line.is_ok_and(|l| l.contains(CHILD_READY)));
        if !ready {
            let mut stderr = String::new();
            let _ = child
                .stderr
                .take()
                .expect("piped")
                .read_to_string(&mut stderr);
            panic!("the child exited before its engine ran: {stderr}");
        }

        assert_locked(start(&path), &path, child.id());
        // SIGKILL: no shutdown, no destructor; the kernel releases the lock.
        child.kill().unwrap();
        child.wait().unwrap();
        let engine = start(&path).expect("the lock died with its process");
        assert_eq!(add(&engine, 1), 8, "the child's change was recovered");
        engine.shutdown().unwrap();
    });
}

/// The child: starts an engine, logs a change, says so, and waits to be killed.
fn run_child(dir: &Path) -> ! {
    let engine = start(dir).expect("the child's engine starts");
    assert_eq!(add(&engine, 7), 7);
    // A line of its own: the test harness may have printed half a line.
    println!("\n{CHILD_READY}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
