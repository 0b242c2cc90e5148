//! The data directory at start: a `data_dir` that cannot be a directory
//! fails with a structured error that names the path and says what to
//! change, never a bare "File exists (os error 17)".

mod common_durable;

use percore::Error;

use common_durable::{durable_engine, Counter, DataDir};

#[test]
fn a_data_dir_that_is_a_regular_file_is_named_in_the_error() {
    let scratch = DataDir::new("data-dir-is-a-file");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let file = scratch.path().join("not-a-directory");
    std::fs::write(&file, b"a file where the data directory should be").unwrap();

    let err = durable_engine(&file, 1, 1 << 30)
        .register_durable::<Counter>()
        .build()
        .unwrap_err();
    match &err {
        Error::DataDirNotADirectory { dir } => assert_eq!(dir, &file),
        other => panic!("expected DataDirNotADirectory, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(
        text.contains("data_dir"),
        "says which setting to change: {text}"
    );
}

#[test]
fn a_data_dir_under_a_regular_file_is_named_in_the_error() {
    let scratch = DataDir::new("data-dir-under-a-file");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let file = scratch.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let dir = file.join("data");

    let err = durable_engine(&dir, 1, 1 << 30)
        .register_durable::<Counter>()
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::DataDir { dir: d, .. } if d == &dir),
        "expected DataDir naming {}, got {err:?}",
        dir.display()
    );
    let text = err.to_string();
    assert!(text.contains(&dir.display().to_string()), "{text}");
}
