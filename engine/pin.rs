//! Choosing cores and checking the machine before any thread starts.

use crate::config::Cores;
use crate::error::Error;

/// The cores this process may run on (its affinity mask), ascending.
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

/// The core of each shard, in shard order.
pub(crate) fn plan_cores(
    cores: &Cores,
    available: &[usize],
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
                if !available.contains(&core) {
                    return Err(Error::CoreUnavailable {
                        core,
                        available: available.to_vec(),
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
            plan_cores(&Cores::All, &avail, false).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            plan_cores(&Cores::Count(2), &avail, false).unwrap(),
            vec![0, 1]
        );
        assert_eq!(
            plan_cores(&Cores::List(vec![3, 1]), &avail, false).unwrap(),
            vec![3, 1]
        );
        assert_eq!(
            plan_cores(&Cores::Count(6), &avail, true).unwrap(),
            vec![0, 1, 2, 3, 0, 1]
        );
    }

    #[test]
    fn refuses_missing_cores_and_too_many_shards() {
        let avail = [0, 1];
        match plan_cores(&Cores::List(vec![0, 7]), &avail, false) {
            Err(Error::CoreUnavailable { core: 7, available }) => assert_eq!(available, vec![0, 1]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan_cores(&Cores::Count(3), &avail, false),
            Err(Error::TooManyShards {
                requested: 3,
                available: 2
            })
        ));
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
