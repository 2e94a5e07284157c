//! What a process costs, from /proc: CPU seconds (its own, its live children's and its reaped
//! children's, so socat's and squid's helpers count) and PSS.

use anyhow::{Context, Result};

/// Kernel clock ticks per second for the times in /proc/PID/stat (`USER_HZ`). It is 100 on
/// every Linux architecture's ABI (`getconf CLK_TCK`); the bench reads no other clock.
const TICKS_PER_SEC: f64 = 100.0;

/// Fields of /proc/PID/stat after the command name, counted from `state` (field 3) = 0.
const PPID: usize = 1;
const UTIME: usize = 11;
const CSTIME: usize = 14;

/// The fields after `(comm)`: the name may contain spaces and brackets, the last `)` ends it.
fn stat_fields(pid: u32) -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("no command name in /proc/{pid}/stat"))?;
    // `state` is a letter: keep its place with a 0 so the indices match proc(5).
    Ok(rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

/// utime + stime + cutime + cstime of one process, in ticks.
fn ticks(pid: u32) -> Result<u64> {
    let f = stat_fields(pid)?;
    let t = f
        .get(UTIME..=CSTIME)
        .with_context(|| format!("short /proc/{pid}/stat"))?;
    Ok(t.iter().sum())
}

/// Live children of `pid` (one level: squid's helpers, socat's per-connection forks).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat_fields(p).is_ok_and(|f| f.get(PPID) == Some(&u64::from(pid))))
        .collect()
}

/// CPU seconds used so far by `pid`, its live children and the children it has reaped.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let mut t = ticks(pid)?;
    for c in children(pid) {
        // A child that exited between listing and reading is counted in cutime once reaped.
        t += ticks(c).unwrap_or(0);
    }
    Ok(t as f64 / TICKS_PER_SEC)
}

/// Proportional set size in KiB (/proc/PID/smaps_rollup, Linux 4.14+): shared pages count
/// a share each, so this is what one more process of the kind really costs.
pub fn pss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no Pss in {path}"))
}

/// CPU seconds per GB (10^9 bytes) moved.
pub fn per_gb(cpu_secs: f64, bytes: u64) -> f64 {
    cpu_secs / (bytes as f64 / 1e9).max(1e-12)
}

/// CPU seconds used so far by the live threads of `pid` (not its children), in nanoseconds'
/// resolution: the sum of the first field of /proc/PID/task/*/schedstat. For idle processes,
/// whose keepalives cost well under the 10 ms tick of /proc/PID/stat. A thread that ended
/// drops out of the sum: use it over windows in which no thread ends.
pub fn thread_cpu_secs(pid: u32) -> Result<f64> {
    let dir = format!("/proc/{pid}/task");
    let mut ns = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = entry?.path().join("schedstat");
        // A thread that ended between listing and reading is simply gone.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("no run time in {}", path.display()))?;
    }
    Ok(ns as f64 / 1e9)
}
