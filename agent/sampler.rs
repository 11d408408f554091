//! Resource use of a task's whole process group, read from /proc: every
//! process the command started, not just the shell.

use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub memory_mb: u64,
    /// Percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    pub processes: u32,
}

pub struct GroupSampler {
    pgid: i32,
    last: Option<(Instant, u64)>,
    ticks_per_second: f64,
    page_size: u64,
}

impl GroupSampler {
    pub fn new(pgid: i32) -> Self {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as u64;
        GroupSampler {
            pgid,
            last: None,
            ticks_per_second: ticks,
            page_size: page,
        }
    }

    pub fn sample(&mut self) -> Usage {
        let (mut rss_pages, mut ticks, mut processes) = (0u64, 0u64, 0u32);
        for stat in group_stats(self.pgid) {
            rss_pages += stat.rss_pages;
            ticks += stat.cpu_ticks;
            processes += 1;
        }
        let now = Instant::now();
        let cpu_percent = match self.last {
            Some((then, before)) => {
                let secs = now.duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    ticks.saturating_sub(before) as f64 / self.ticks_per_second / secs * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        Usage {
            memory_mb: rss_pages * self.page_size / (1024 * 1024),
            cpu_percent,
            processes,
        }
    }
}

struct Stat {
    rss_pages: u64,
    cpu_ticks: u64,
}

/// Whether some process of group `pgid` has `entry` (`KEY=value`) in its
/// environment.
pub fn group_has_env(pgid: i32, entry: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|(g, _)| g == pgid)
        })
        .any(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()))
        })
}

/// `/proc/<pid>/stat` of every process in group `pgid`.
fn group_stats(pgid: i32) -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s).filter(|(g, _)| *g == pgid).map(|(_, st)| st))
        .collect()
}

/// Fields after the command name (which may hold spaces and parentheses).
fn parse_stat(s: &str) -> Option<(i32, Stat)> {
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): pgrp is field 5, utime 14, stime 15, rss 24.
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: i64 = f.get(21)?.parse().ok()?;
    Some((
        pgrp,
        Stat {
            rss_pages: rss.max(0) as u64,
            cpu_ticks: utime + stime,
        },
    ))
}

/// Bytes under `dir`, for disk usage of an attempt.
pub fn dir_size_mb(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(p) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) / (1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let line = "1234 (my (odd) cmd) S 1 4321 4321 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000000 2560 18446744073709551615";
        let (pgrp, st) = parse_stat(line).unwrap();
        assert_eq!(pgrp, 4321);
        assert_eq!(st.cpu_ticks, 300);
        assert_eq!(st.rss_pages, 2560);
    }

    #[test]
    fn samples_this_process_group() {
        let me = nix::unistd::getpgrp().as_raw();
        let u = GroupSampler::new(me).sample();
        assert!(u.processes >= 1);
        assert!(u.memory_mb > 0);
    }
}
