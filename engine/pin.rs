//! Choosing cores and checking the machine before any thread starts.

use crate::config::Cores;
use crate::error::Error;

/// The cores in the affinity mask of the calling thread, ascending: what
/// `Cores::All` and `Cores::Count` choose from (so `taskset -c 2,3 prog` runs
/// shards on 2 and 3).
pub(crate) fn available_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The cores any thread of this process may be scheduled on: the cgroup's
/// effective cpuset (or every online CPU), which explicit core lists are
/// checked against — a thread may widen its affinity within it, so a caller
/// that pinned itself before building the engine can still list other cores.
pub(crate) fn schedulable_cores() -> Vec<usize> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| parse_cpu_list(&s))
    };
    read("/sys/fs/cgroup/cpuset.cpus.effective")
        .filter(|l| !l.is_empty())
        .or_else(|| read("/sys/devices/system/cpu/online"))
        .unwrap_or_else(available_cores)
}

/// Parses the kernel's CPU list format ("0-3,8,10-11").
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// The core of each shard, in shard order. `available` is what `All`/`Count`
/// pick from; `schedulable` is what a `List` is checked against.
pub(crate) fn plan_cores(
    cores: &Cores,
    available: &[usize],
    schedulable: &[usize],
    oversubscribe: bool,
) -> Result<Vec<usize>, Error> {
    if available.is_empty() {
        return Err(Error::Config {
            field: "cores".into(),
            problem: "the process's CPU affinity mask could not be read".into(),
        });
    }
    match cores {
        Cores::All => Ok(available.to_vec()),
        Cores::Count(n) if *n <= available.len() => Ok(available[..*n].to_vec()),
        Cores::Count(n) if oversubscribe => {
            Ok((0..*n).map(|i| available[i % available.len()]).collect())
        }
        Cores::Count(n) => Err(Error::TooManyShards {
            requested: *n,
            available: available.len(),
        }),
        Cores::List(list) => {
            for &core in list {
                if !schedulable.contains(&core) {
                    return Err(Error::CoreUnavailable {
                        core,
                        available: schedulable.to_vec(),
                    });
                }
            }
            Ok(list.clone())
        }
    }
}

const IO_URING_HINT: &str = "enable it with `sysctl kernel.io_uring_disabled=0` \
    (or 1 and add the user to the group in kernel.io_uring_group); in a container, \
    allow the io_uring_setup, io_uring_enter and io_uring_register syscalls in the \
    seccomp profile (Docker: --security-opt seccomp=unconfined or a custom profile)";

/// Checks that this process can create an io_uring; glommio and the log need one.
pub(crate) fn check_io_uring() -> Result<(), Error> {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok());
    match io_uring::IoUring::new(2) {
        Ok(_) => Ok(()),
        Err(e) => Err(diagnose_io_uring(e, sysctl)),
    }
}

/// Turns a failed `io_uring_setup` into an actionable error.
pub(crate) fn diagnose_io_uring(err: std::io::Error, sysctl: Option<u8>) -> Error {
    let detail = match (err.raw_os_error(), sysctl) {
        (_, Some(2)) => {
            format!("kernel.io_uring_disabled = 2 (io_uring is off for everyone): {err}")
        }
        (Some(libc::EPERM), Some(1)) => format!(
            "kernel.io_uring_disabled = 1 and this process is not in kernel.io_uring_group: {err}"
        ),
        (Some(libc::ENOSYS), _) => {
            format!("the kernel has no io_uring (needs Linux 5.10 or later): {err}")
        }
        (Some(libc::EPERM), _) => {
            format!("io_uring_setup was refused (seccomp or LSM policy): {err}")
        }
        _ => format!("io_uring_setup failed: {err}"),
    };
    Error::IoUringUnavailable {
        detail,
        hint: IO_URING_HINT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_all_count_and_list() {
        let avail = [0, 1, 2, 3];
        assert_eq!(
            plan_cores(&Cores::All, &avail, &avail, false).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            plan_cores(&Cores::Count(2), &avail, &avail, false).unwrap(),
            vec![0, 1]
        );
        assert_eq!(
            plan_cores(&Cores::List(vec![3, 1]), &avail, &avail, false).unwrap(),
            vec![3, 1]
        );
        assert_eq!(
            plan_cores(&Cores::Count(6), &avail, &avail, true).unwrap(),
            vec![0, 1, 2, 3, 0, 1]
        );
    }

    #[test]
    fn refuses_missing_cores_and_too_many_shards() {
        let avail = [0, 1];
        match plan_cores(&Cores::List(vec![0, 7]), &avail, &avail, false) {
            Err(Error::CoreUnavailable { core: 7, available }) => assert_eq!(available, vec![0, 1]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan_cores(&Cores::Count(3), &avail, &avail, false),
            Err(Error::TooManyShards {
                requested: 3,
                available: 2
            })
        ));
    }

    #[test]
    fn parses_kernel_cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn io_uring_diagnosis_says_how_to_enable_it() {
        let cases = [
            (libc::EPERM, Some(2), "io_uring_disabled = 2"),
            (libc::EPERM, Some(1), "io_uring_group"),
            (libc::ENOSYS, Some(0), "5.10"),
            (libc::EPERM, Some(0), "seccomp"),
        ];
        for (errno, sysctl, needle) in cases {
            let e = diagnose_io_uring(std::io::Error::from_raw_os_error(errno), sysctl);
            let text = e.to_string();
            assert!(text.contains(needle), "{text}");
            assert!(text.contains("sysctl kernel.io_uring_disabled=0"), "{text}");
        }
    }
}
