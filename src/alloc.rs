//! Giving memory back to the system; the only `unsafe` in the crate (three FFI calls).
//!
//! * glibc's defaults give freed memory back at once: a free that leaves more than 128 KiB
//!   at the top of an arena trims it (`madvise`), and blocks of 128 KiB and more are
//!   mapped and unmapped each time. The data path allocates a 64 KiB frame buffer per
//!   frame and 1 MiB file blocks, so under load every one of them came back as fresh,
//!   zeroed pages: profiled on the AWX path, page faults were 5 % of a relay's CPU.
//!   [`hold_freed_memory`] (at start-up) keeps up to [`KEEP`] freed and maps only blocks
//!   above a quarter of it, in one arena: `malloc_trim` returns the free top of the main
//!   arena only, so with glibc's arena per thread a daemon kept 2 MiB per arena after a
//!   transfer, 14 MiB RSS at rest against 5.8 MiB with one (one arena cost no throughput
//!   on the AWX path). [`Traffic`] says when the data path is quiet, to give it back.
//!   Only the daemon does this: a unit's supervisor (one per running job, living as long
//!   as it) and the short-lived client keep glibc's defaults.
//!
//! * glibc keeps what the process freed in its arenas (a flood of advertisements leaves
//!   tens of MiB resident after the nodes it named are forgotten); `malloc_trim(0)` returns
//!   the free pages of every arena.
//! * Start-up (argument and config parsing, TLS material, binding) runs code and reads
//!   tables an idle daemon never touches again, and the kernel maps each page of the
//!   executable it faults in together with its 64 KiB neighbourhood (fault-around), so a
//!   daemon that has just started has most of its executable mapped. Dropping those
//!   page-table entries once start-up is over (`MADV_DONTNEED` over the executable's
//!   read-only file mappings) leaves the pages in the page cache, shared and clean, and
//!   lets what the daemon keeps running fault back in from there (docs/LIMITS.md, "Memory").

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Free memory the heap keeps at its top before a free trims it (glibc's
/// `M_TRIM_THRESHOLD`; blocks from a quarter of it get their own mapping).
pub const KEEP: usize = 8 << 20;

/// One arena and [`KEEP`] for this process: call it first thing in `main`, before any
/// thread.
/// Elsewhere than glibc: nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn hold_freed_memory() {
    // SAFETY: mallopt takes two integers; glibc serialises it with every allocator call.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP as libc::c_int);
        libc::mallopt(libc::M_MMAP_THRESHOLD, (KEEP / 4) as libc::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn hold_freed_memory() {}

/// Bytes the links have carried, and when a trim is due once they stop (one per process:
/// the data path notes its bytes, `daemon::memory` waits on it).
pub struct Traffic {
    moved: AtomicU64,
    /// `moved` from which a burst is under way and a trim due once it ends; `u64::MAX`
    /// while the waiter has been told (one thread wins the exchange that tells it).
    arm_at: AtomicU64,
    wake: Notify,
}

/// Bytes moved since the last trim that make one due once traffic stops (what idle
/// links carry reaches it only over many minutes).
pub const WORTH_TRIMMING: u64 = 4 << 20;

/// What links carry while idle (keepalives, advertisements, pings) in a quiet period.
pub const IDLE_TRICKLE: u64 = 64 << 10;

/// See [`Traffic`].
pub static TRAFFIC: Traffic = Traffic::new();

impl Traffic {
    pub const fn new() -> Traffic {
        Traffic {
            moved: AtomicU64::new(0),
            arm_at: AtomicU64::new(WORTH_TRIMMING),
            wake: Notify::const_new(),
        }
    }

    /// Counts `n` bytes a link read or wrote: two atomic operations, and a wake-up of the
    /// waiter once per burst.
    pub fn note(&self, n: u64) {
        let moved = self.moved.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        let at = self.arm_at.load(Ordering::Relaxed);
        if moved >= at
            && self.arm_at.compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.wake.notify_one();
        }
    }

    /// Waits for a burst (at least [`WORTH_TRIMMING`] bytes), then until less than
    /// [`IDLE_TRICKLE`] moved in `quiet`; sleeps without a timer while the links are idle.
    pub async fn burst_then_quiet(&self, quiet: std::time::Duration) {
        self.wake.notified().await;
        loop {
            let before = self.moved.load(Ordering::Relaxed);
            tokio::time::sleep(quiet).await;
            let now = self.moved.load(Ordering::Relaxed);
            if now.saturating_sub(before) < IDLE_TRICKLE {
                self.arm_at.store(now.saturating_add(WORTH_TRIMMING), Ordering::Release);
                return;
            }
        }
    }
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic::new()
    }
}

/// Asks the allocator to return free pages; whether it gave anything back. It walks and
/// locks every arena, so it runs on a blocking thread and only after the mesh let go of
/// a lot (`mesh::driver`) or once the data path is quiet (`daemon::memory`). Elsewhere
/// than glibc: nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers; glibc serialises it with every other
    // allocator call.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// The executable's mappings whose pages [`ExecutablePages::release`] drops: how many
/// and how many KiB of them were resident when they were listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutablePages {
    pub mappings: usize,
    pub resident_kib: u64,
    ranges: Vec<Range>,
}

/// One mapping of `/proc/self/smaps` that may be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
    resident_kib: u64,
}

/// The mappings of `exe` in an smaps listing whose pages can be dropped without losing a
/// byte: not writable, backed by the file, and holding no private copy of any page
/// (`Anonymous: 0 kB`; the relocated RELRO segment has them and is left alone). Only those
/// with resident pages.
fn releasable(smaps: &str, exe: &str) -> Vec<Range> {
    let mut out = Vec::new();
    // The mapping being read and whether it is still eligible.
    let mut cur: Option<(Range, bool)> = None;
    let finish = |cur: Option<(Range, bool)>, out: &mut Vec<Range>| {
        out.extend(cur.filter(|(r, ok)| *ok && r.resident_kib > 0).map(|(r, _)| r));
    };
    for line in smaps.lines() {
        if let Some((range, eligible)) = mapping_header(line, exe) {
            finish(cur.take(), &mut out);
            cur = Some((range, eligible));
            continue;
        }
        let Some((range, eligible)) = cur.as_mut() else { continue };
        let Some((key, value)) = line.split_once(':') else { continue };
        let kib = value.trim().strip_suffix(" kB").and_then(|v| v.trim().parse::<u64>().ok());
        match (key, kib) {
            ("Rss", Some(k)) => range.resident_kib = k,
            ("Anonymous", Some(k)) if k > 0 => *eligible = false,
            ("Anonymous" | "Rss", None) => *eligible = false,
            _ => {}
        }
    }
    finish(cur, &mut out);
    out
}

/// A mapping's header line (`start-end perms offset dev inode path`): its range and
/// whether it is a read-only mapping of `exe`. None for the lines that follow a header.
fn mapping_header(line: &str, exe: &str) -> Option<(Range, bool)> {
    let mut fields = line.splitn(6, ' ');
    let (range, perms) = (fields.next()?, fields.next()?);
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let (_offset, _dev, inode) = (fields.next()?, fields.next()?, fields.next()?);
    let inode: u64 = inode.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start();
    let p = perms.as_bytes();
    let eligible = p.len() == 4 && p[0] == b'r' && p[1] == b'-' && inode != 0 && path == exe;
    (end > start).then_some((Range { start, end, resident_kib: 0 }, eligible))
}

/// This process's own executable's read-only file mappings (text and read-only data, not
/// the relocated RELRO segment) that hold resident pages. Elsewhere than Linux: none.
#[cfg(target_os = "linux")]
pub fn executable_pages() -> std::io::Result<ExecutablePages> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_str().ok_or_else(|| std::io::Error::other("executable path is not UTF-8"))?;
    let ranges = releasable(&std::fs::read_to_string("/proc/self/smaps")?, exe);
    let resident_kib = ranges.iter().map(|r| r.resident_kib).sum();
    Ok(ExecutablePages { mappings: ranges.len(), resident_kib, ranges })
}

#[cfg(not(target_os = "linux"))]
pub fn executable_pages() -> std::io::Result<ExecutablePages> {
    Ok(ExecutablePages::default())
}

impl ExecutablePages {
    /// Drops this process's page-table entries for these mappings: the pages stay in the
    /// page cache, and the next access to any of them is a minor fault that maps it (and
    /// its fault-around neighbourhood) again from there. Called once start-up is over, what
    /// the daemon keeps running comes back; what only start-up ran stays out of its RSS
    /// and becomes page cache the kernel can reclaim. Whatever runs between listing and
    /// releasing (say, logging what is released) is mapped back only if it runs again.
    pub fn release(self) -> std::io::Result<()> {
        for r in &self.ranges {
            advise_dontneed(r.start, r.end - r.start)?;
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_dontneed(_start: usize, _len: usize) -> std::io::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_dontneed(start: usize, len: usize) -> std::io::Result<()> {
    // SAFETY: [start, start + len) is a whole mapping of this process's executable, as the
    // kernel listed it: read-only, file-backed and holding no private (anonymous) page. The
    // executable's mappings are never unmapped while it runs, and a read-only mapping gains
    // no private page without mprotect, which nothing in the process calls on them.
    // MADV_DONTNEED on such a mapping only drops page-table entries; the next access reads
    // the same bytes from the page cache, so no memory any code refers to changes.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst wakes the waiter once; it returns only after a quiet period; what idle
    /// links carry neither ends a burst's quiet wait early nor arms the next one.
    #[tokio::test(start_paused = true)]
    async fn a_trim_comes_once_per_burst_and_only_after_the_links_go_quiet() {
        use std::time::Duration;
        let t = Traffic::new();
        let quiet = Duration::from_secs(5);
        t.note(WORTH_TRIMMING - 1);
        assert!(tokio::time::timeout(quiet * 4, t.burst_then_quiet(quiet)).await.is_err(), "no burst yet");
        t.note(1);
        t.note(WORTH_TRIMMING);
        // Busy for a while: each period moves more than a trickle, so no trim yet.
        let busy = async {
            for _ in 0..6 {
                tokio::time::sleep(quiet / 2).await;
                t.note(IDLE_TRICKLE);
            }
        };
        let started = tokio::time::Instant::now();
        tokio::join!(busy, t.burst_then_quiet(quiet));
        assert!(started.elapsed() >= quiet * 3, "trimmed while still busy: {:?}", started.elapsed());
        // Idle traffic after the trim does not make another one due.
        t.note(IDLE_TRICKLE);
        assert!(tokio::time::timeout(quiet * 4, t.burst_then_quiet(quiet)).await.is_err(), "trimmed again");
        t.note(WORTH_TRIMMING);
        assert!(tokio::time::timeout(quiet * 4, t.burst_then_quiet(quiet)).await.is_ok(), "the next burst");
    }

    const EXE: &str = "/usr/bin/receptord";

    fn smaps() -> String {
        let m = |hdr: &str, rss: u64, anon: u64| {
            format!(
                "{hdr}\nSize:  100 kB\nRss:  {rss} kB\nPss:  1 kB\nAnonymous:  {anon} kB\nVmFlags: rd mr\n"
            )
        };
        [
            m("55d0c0000000-55d0c0400000 r--p 00000000 fd:01 1234   /usr/bin/receptord", 2000, 0),
            m("55d0c0400000-55d0c0e00000 r-xp 00400000 fd:01 1234   /usr/bin/receptord", 9000, 0),
            // RELRO: relocated at load, then made read-only; its pages are private copies.
            m("55d0c0e00000-55d0c0f00000 r--p 00e00000 fd:01 1234   /usr/bin/receptord", 480, 480),
            m("55d0c0f00000-55d0c0f10000 rw-p 00f00000 fd:01 1234   /usr/bin/receptord", 16, 16),
            m("55d0c0f10000-55d0c0f20000 r--p 00f10000 fd:01 1234   /usr/bin/receptord", 0, 0),
            m(
                "7f0000000000-7f0000100000 r-xp 00028000 fd:01 99   /usr/lib/x86_64-linux-gnu/libc.so.6",
                1000,
                0,
            ),
            m("7f0000200000-7f0000300000 r--p 00000000 00:00 0 ", 4, 0),
            m("7f0000300000-7f0000400000 r-xp 00000000 fd:01 1235   /usr/bin/receptord-old", 50, 0),
        ]
        .concat()
    }

    #[test]
    fn only_the_executables_clean_read_only_mappings_are_released() {
        let r = releasable(&smaps(), EXE);
        assert_eq!(
            r,
            vec![
                Range { start: 0x55d0c0000000, end: 0x55d0c0400000, resident_kib: 2000 },
                Range { start: 0x55d0c0400000, end: 0x55d0c0e00000, resident_kib: 9000 },
            ]
        );
    }

    #[test]
    fn a_deleted_executable_is_matched_by_its_path_as_the_kernel_shows_it() {
        let text = smaps().replace("/usr/bin/receptord\n", "/usr/bin/receptord (deleted)\n");
        assert!(releasable(&text, EXE).is_empty());
        assert_eq!(releasable(&text, "/usr/bin/receptord (deleted)").len(), 2);
    }

    #[test]
    fn a_mapping_whose_anonymous_count_cannot_be_read_is_left_alone() {
        let text = smaps().replacen("Anonymous:  0 kB", "Anonymous:  ? kB", 1);
        assert_eq!(releasable(&text, EXE).len(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn releasing_keeps_the_code_and_data_intact() {
        static TABLE: [u64; 4096] = {
            let mut t = [0u64; 4096];
            let mut i = 0;
            while i < t.len() {
                t[i] = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                i += 1;
            }
            t
        };
        let before: u64 = std::hint::black_box(&TABLE).iter().fold(0, |a, v| a ^ v);
        let pages = executable_pages().expect("list");
        assert!(pages.mappings > 0, "the test binary's own mappings were not found");
        pages.release().expect("release");
        let after: u64 = std::hint::black_box(&TABLE).iter().fold(0, |a, v| a ^ v);
        assert_eq!(before, after);
        // A panic (unwinding tables in the released read-only data) still unwinds.
        assert!(std::panic::catch_unwind(|| panic!("after release")).is_err());
    }
}
