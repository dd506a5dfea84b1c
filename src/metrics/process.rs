//! The conventional `process_*` metrics of the daemon (CPU time, memory, file descriptors,
//! start time), read from `/proc/self` at scrape time, in the names and units of
//! Prometheus' client libraries so stock dashboards and alerts work. Each read is bounded:
//! a few small files, and `/proc/self/fd` counted up to [`MAX_FDS_COUNTED`] entries.
//! Where `/proc` is missing (not Linux) nothing is written.

use std::fmt::Write;

/// Stop counting open descriptors here (the scrape must stay cheap).
pub const MAX_FDS_COUNTED: usize = 1 << 20;

/// What the process metrics report.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Reads `/proc/self` now; `None` without a readable `/proc/self/stat`.
pub fn sample() -> Option<Sample> {
    let stat = read_small("/proc/self/stat")?;
    let ticks =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0)? as f64;
    let page =
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().filter(|p| *p > 0)? as u64;
    let fields = parse_stat(&stat)?;
    let boot = read_small("/proc/stat").and_then(|s| boot_time(&s));
    Some(Sample {
        cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
        resident_bytes: fields.rss_pages.saturating_mul(page),
        virtual_bytes: fields.vsize,
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.take(MAX_FDS_COUNTED).count() as u64),
        max_fds: read_small("/proc/self/limits").and_then(|l| max_open_files(&l)),
        start_time_seconds: boot.map(|b| b as f64 + fields.starttime as f64 / ticks),
    })
}

/// Appends the process families to an OpenMetrics exposition (before its `# EOF`).
pub fn encode(out: &mut String, s: &Sample) {
    let mut family = |name: &str, kind: &str, help: &str, sample: &str, value: String| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {value}\n");
    };
    family(
        "process_cpu_seconds",
        "counter",
        "Total user and system CPU time spent in seconds.",
        "process_cpu_seconds_total",
        format!("{}", s.cpu_seconds),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        "process_resident_memory_bytes",
        s.resident_bytes.to_string(),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        "process_virtual_memory_bytes",
        s.virtual_bytes.to_string(),
    );
    if let Some(n) = s.open_fds {
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            "process_open_fds",
            n.to_string(),
        );
    }
    if let Some(n) = s.max_fds {
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            "process_max_fds",
            n.to_string(),
        );
    }
    if let Some(t) = s.start_time_seconds {
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            "process_start_time_seconds",
            format!("{t}"),
        );
    }
}

fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path).ok()?.take(64 * 1024).read_to_string(&mut s).ok()?;
    Some(s)
}

struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// `/proc/<pid>/stat`: fields after the command name (which may hold spaces and `)`).
fn parse_stat(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state) of proc(5).
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(StatFields {
        utime: num(11)?,
        stime: num(12)?,
        starttime: num(19)?,
        vsize: num(20)?,
        rss_pages: num(21)?,
    })
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 3 0 \
                    123456 20000000 1500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let f = parse_stat(stat).expect("parsed");
        assert_eq!((f.utime, f.stime, f.starttime, f.vsize, f.rss_pages), (150, 50, 123456, 20000000, 1500));
        assert!(parse_stat("12 (x) S 1 2").is_none());
    }

    #[test]
    fn limits_and_boot_time_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\n"), Some(1_700_000_000));
    }

    #[test]
    fn this_process_is_sampled() {
        let s = sample().expect("/proc");
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3) && s.max_fds.is_some_and(|n| n >= 3), "{s:?}");
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        assert!(s.start_time_seconds.is_some_and(|t| t <= now + 1.0 && t > now - 86400.0 * 365.0), "{s:?}");
        let mut out = String::new();
        encode(&mut out, &s);
        assert!(out.contains("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total "), "{out}");
    }
}
