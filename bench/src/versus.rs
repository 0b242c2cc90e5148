//! `versus`: percore side by side with the systems a user would otherwise pick.
//!
//! ```text
//! cargo run --release -p percore-bench --bin versus -- [--quick] [--only SYSTEM[,SYSTEM]] [--workloads W[,W]]
//! ```
//!
//! Every repetition of every (system, workload) runs in a fresh child process (this
//! binary re-executed with `--child SYSTEM WORKLOAD`), so no system inherits another's
//! threads, heap or caches, and `activate` measures resident memory in a process that
//! never freed any. The parent prints each figure as `system workload metric value`
//! on stdout as soon as its median is known, shows progress on stderr, and ends with a
//! markdown table. It exits with status 1 if any child failed or timed out (the other
//! figures are still reported).
//!
//! The durable workloads (`durable_ask`, `durable_records`, `recovery`) run on percore
//! and on `fdatasync`, raw file I/O on the same filesystem; their files go under
//! [`percore_bench::scratch::base_dir`] and are removed by the child that wrote them.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use percore_bench::measure::median;
use percore_bench::report::{table, Row};
use percore_bench::systems::{self, System, BASELINE};
use percore_bench::workload::{Scale, Workload};

/// A child that runs longer than this is killed and its figures reported missing.
const CHILD_QUICK_TIMEOUT: Duration = Duration::from_secs(60);
const CHILD_FULL_TIMEOUT: Duration = Duration::from_secs(600);

const USAGE: &str = "\
usage: versus [--quick] [--only SYSTEM[,SYSTEM]] [--workloads WORKLOAD[,WORKLOAD]]

  --quick       a reduced run (smoke check, well under a minute)
  --only        run only these systems
  --workloads   run only these workloads (tell, ask, many, activate, fanout, idle,
                durable_ask, durable_records, recovery)

The durable workloads write under the system temporary directory, or under
$VERSUS_DATA_DIR if set.";

struct Options {
    scale: Scale,
    systems: Vec<&'static System>,
    workloads: Vec<Workload>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    match parse(&args) {
        Ok(options) => parent(&options),
        Err(message) => {
            eprintln!("versus: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        scale: Scale::FULL,
        systems: systems::ALL.iter().collect(),
        workloads: Workload::ALL.to_vec(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.scale = Scale::QUICK,
            "--only" => {
                let list = args.next().ok_or("--only needs a list of systems")?;
                options.systems = list
                    .split(',')
                    .map(|name| {
                        systems::find(name).ok_or_else(|| {
                            let known: Vec<_> = systems::ALL.iter().map(|s| s.name).collect();
                            format!("unknown system {name:?}; known: {}", known.join(", "))
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--workloads" => {
                let list = args.next().ok_or("--workloads needs a list of workloads")?;
                options.workloads = list
                    .split(',')
                    .map(|name| {
                        Workload::from_name(name)
                            .ok_or_else(|| format!("unknown workload {name:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err("help".to_owned()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(options)
}

/// Runs one repetition in this process and prints `metric value` lines for the parent.
fn child(args: &[String]) -> ExitCode {
    let [system, workload, rest @ ..] = args else {
        eprintln!("versus --child: expected SYSTEM WORKLOAD [--quick]");
        return ExitCode::from(2);
    };
    let scale = if rest.iter().any(|a| a == "--quick") {
        Scale::QUICK
    } else {
        Scale::FULL
    };
    let run = systems::find(system)
        .zip(Workload::from_name(workload))
        .and_then(|(system, workload)| system.run(workload));
    let Some(run) = run else {
        eprintln!("versus --child: {system} does not run {workload}");
        return ExitCode::from(2);
    };
    let figures = run(scale);
    let mut stdout = std::io::stdout().lock();
    for figure in figures {
        let _ = writeln!(stdout, "{} {}", figure.metric, figure.value);
    }
    let _ = stdout.flush();
    // Leave without tearing the system down: some keep a million actors alive, and
    // their shutdown is not part of any measurement.
    std::process::exit(0)
}

/// Runs one child for (system, workload) and returns its figures, or why it failed.
fn run_child(system: &str, workload: Workload, scale: Scale) -> Result<Vec<(String, f64)>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut command = Command::new(exe);
    command.args(["--child", system, workload.name()]);
    if scale.quick {
        command.arg("--quick");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start child: {e}"))?;
    let timeout = if scale.quick {
        CHILD_QUICK_TIMEOUT
    } else {
        CHILD_FULL_TIMEOUT
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut output = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut output)
        .map_err(|e| format!("cannot read child output: {e}"))?;
    if !status.success() {
        return Err(format!("child failed ({status})"));
    }
    output
        .lines()
        .map(|line| {
            let (metric, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("unreadable child line {line:?}"))?;
            let value: f64 = value
                .parse()
                .map_err(|_| format!("unreadable value in {line:?}"))?;
            Ok((metric.to_owned(), value))
        })
        .collect()
}

fn parent(options: &Options) -> ExitCode {
    let scale = options.scale;
    let plan: Vec<(&System, Workload)> = options
        .workloads
        .iter()
        .flat_map(|&workload| {
            options
                .systems
                .iter()
                .filter(move |system| system.run(workload).is_some())
                .map(move |&system| (system, workload))
        })
        .collect();
    let run_started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut stdout = std::io::stdout();
    for (index, &(system, workload)) in plan.iter().enumerate() {
        let repetitions = scale.repetitions(workload);
        let mut samples: Vec<(String, Vec<f64>)> = Vec::new();
        for repetition in 1..=repetitions {
            let progress = format!(
                "versus: [{}/{}] {} {} run {repetition}/{repetitions}",
                index + 1,
                plan.len(),
                system.name,
                workload.name(),
            );
            let child_started = Instant::now();
            match run_child(system.name, workload, scale) {
                Ok(figures) => {
                    eprintln!("{progress}: {:.1} s", child_started.elapsed().as_secs_f64());
                    for (metric, value) in figures {
                        match samples.iter_mut().find(|(m, _)| *m == metric) {
                            Some((_, values)) => values.push(value),
                            None => samples.push((metric, vec![value])),
                        }
                    }
                }
                Err(why) => {
                    eprintln!("{progress}: {why}");
                    failures.push(format!("{} {}: {why}", system.name, workload.name()));
                }
            }
        }
        for (metric, mut values) in samples {
            let row = Row {
                system: system.name.to_owned(),
                workload,
                metric,
                value: median(&mut values),
            };
            let _ = writeln!(stdout, "{}", row.line());
            let _ = stdout.flush();
            rows.push(row);
        }
    }
    let mut columns: Vec<&str> = vec![BASELINE];
    columns.extend(
        systems::ALL
            .iter()
            .map(|s| s.name)
            .filter(|&n| n != BASELINE),
    );
    let kind = if scale.quick {
        "quick run (--quick), one run per figure"
    } else {
        "full run, median of 5 runs per figure (3 for idle)"
    };
    let _ = writeln!(stdout, "\n## versus: {kind}\n");
    let _ = write!(stdout, "{}", table(&rows, &columns, BASELINE));
    eprintln!(
        "versus: {} figures from {} child runs in {:.1} s",
        rows.len(),
        plan.iter()
            .map(|&(_, w)| scale.repetitions(w))
            .sum::<usize>(),
        run_started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("versus: {} run(s) failed:", failures.len());
        for failure in &failures {
            eprintln!("  {failure}");
        }
        ExitCode::FAILURE
    }
}
