//! The record of work tokens already used (`limits.signed_tokens`): each admitted token's
//! ID (`jti`), kept until the token expires. With a data directory the record is also an
//! append-only journal (`<data_dir>/tokens.journal`), written and fsynced before the token
//! is admitted, so a restart — or kill -9 — does not reopen the replay window of tokens
//! already used. A token that cannot be recorded (disk full) is refused, never admitted
//! unrecorded. The file is created with the first token recorded: a node that never
//! verifies a signature writes nothing.
//!
//! Journal lines are `<exp> <sha256(jti) hex>`: fixed size whatever the token carries.
//! Unreadable lines are skipped (a torn last line after a crash), and a torn tail is cut
//! off before the next append; the journal is rewritten with only the unexpired entries at
//! start and whenever it holds twice as many lines as live entries.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a token could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the token was already used (replayed)")]
    Replayed,
    #[error("too many unexpired tokens remembered (limits.signed_tokens)")]
    Full,
    #[error("recording the token in {path}: {source}")]
    Journal { path: String, source: io::Error },
}

/// Digest of a token ID: the key in memory and in the journal.
type Key = [u8; 32];

fn key(jti: &str) -> Key {
    crate::transport::tls::sha256(jti.as_bytes())
}

/// Token IDs seen, with their expiry (seconds since the epoch).
#[derive(Default)]
pub(crate) struct Replay {
    seen: HashMap<Key, u64>,
    journal: Option<Journal>,
    /// Where the journal goes when none exists yet: it is created with the first token
    /// recorded (a node that never verifies a signature writes nothing).
    unopened: Option<PathBuf>,
}

struct Journal {
    path: PathBuf,
    /// `path` opened for appending (the inode the name points to).
    file: File,
    /// Bytes of whole lines in the file: a failed append is cut back to this.
    len: u64,
    /// Lines in the file (live or not).
    lines: usize,
    /// Set when the file can no longer be trusted to hold what is appended (a failed
    /// cut-back, or a compaction that failed after its rename): every token is refused
    /// until a restart reloads the journal.
    broken: Option<String>,
}

impl Journal {
    fn new(path: &Path, (file, len): (File, u64), lines: usize) -> Journal {
        Journal { path: path.to_owned(), file, len, lines, broken: None }
    }

    fn error(&self, source: io::Error) -> ReplayError {
        ReplayError::Journal { path: self.path.display().to_string(), source }
    }

    /// Appends one line and fsyncs it. Whatever follows the last whole line (a torn
    /// write) is cut off first, and again on failure: no line is ever glued to a fragment,
    /// which would hide it when the journal is read.
    fn append(&mut self, line: &[u8]) -> Result<(), ReplayError> {
        if let Some(why) = &self.broken {
            return Err(self.error(io::Error::other(format!(
                "the journal is unusable since {why}; restart the daemon"
            ))));
        }
        let written = (|| {
            if self.file.metadata()?.len() != self.len {
                self.file.set_len(self.len)?;
            }
            self.file.write_all(line)?;
            self.file.sync_data()
        })();
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                self.lines += 1;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(self.len) {
                    self.broken = Some(format!("a failed append could not be undone ({cut})"));
                }
                Err(self.error(e))
            }
        }
    }
}

impl Replay {
    /// Loads the journal at `path` (created with the first token if missing), keeping every entry unexpired at
    /// `now` — even beyond `max` (a lowered limit): a used token is never forgotten early,
    /// new ones are refused until there is room — and rewrites it with only those.
    /// Returns how many were kept.
    pub(crate) fn open(&mut self, path: &Path, now: u64, max: usize) -> Result<usize, ReplayError> {
        let err = |source| ReplayError::Journal { path: path.display().to_string(), source };
        match File::open(path) {
            Ok(f) => {
                let mut lines = Lines { r: BufReader::new(f), line: Vec::new() };
                while let Some(line) = lines.next_line().map_err(err)? {
                    if let Some((exp, k)) = parse(line).filter(|(exp, _)| *exp >= now) {
                        self.seen.insert(k, exp);
                    }
                }
                if self.seen.len() > max {
                    tracing::warn!(path = %path.display(), held = self.seen.len(), max,
                        "more unexpired work tokens used than limits.signed_tokens: signed requests are refused until some expire");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.unopened = Some(path.to_owned());
                return Ok(0);
            }
            Err(e) => return Err(err(e)),
        }
        let file = rewrite(path, &self.seen).map_err(|(e, _)| err(e))?;
        self.journal = Some(Journal::new(path, file, self.seen.len()));
        Ok(self.seen.len())
    }

    /// Records `jti` (valid until `exp`) as used; a second use is a replay. When `max`
    /// unexpired IDs are held, new tokens are refused: evicting one would let it be
    /// replayed.
    pub(crate) fn remember(&mut self, jti: &str, exp: u64, max: usize, now: u64) -> Result<(), ReplayError> {
        let k = key(jti);
        if self.seen.get(&k).is_some_and(|e| *e >= now) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= max {
            self.seen.retain(|_, e| *e >= now);
        }
        if self.seen.len() >= max {
            return Err(ReplayError::Full);
        }
        if let Some(path) = self.unopened.as_deref() {
            let file = rewrite(path, &self.seen)
                .map_err(|(source, _)| ReplayError::Journal { path: path.display().to_string(), source })?;
            self.journal = Some(Journal::new(path, file, self.seen.len()));
            self.unopened = None;
        }
        if let Some(j) = self.journal.as_mut() {
            j.append(format!("{exp} {}\n", crate::transport::tls::hex(&k)).as_bytes())?;
        }
        self.seen.insert(k, exp);
        self.compact(now);
        Ok(())
    }

    /// Rewrites the journal with only the live entries once it holds twice as many lines
    /// (and at least 1,024 more); expired entries are dropped from memory every 1,024
    /// appends, so the count is of live ones. A failure before the rename leaves the old
    /// journal, still correct and still appended to; one after it breaks the journal.
    fn compact(&mut self, now: u64) {
        let Some(j) = self.journal.as_mut() else { return };
        if j.lines < 2 * self.seen.len() + 1024 && j.lines % 1024 != 0 {
            return;
        }
        self.seen.retain(|_, e| *e >= now);
        if j.lines < 2 * self.seen.len() + 1024 {
            return;
        }
        match rewrite(&j.path, &self.seen) {
            Ok(file) => *j = Journal::new(&j.path.clone(), file, self.seen.len()),
            Err((e, renamed)) => {
                tracing::warn!(path = %j.path.display(), error = %e, "could not compact the token journal");
                if renamed {
                    j.broken = Some(format!("its compaction failed after the rename ({e})"));
                }
            }
        }
    }
}

/// The journal's lines, each at most [`MAX_LINE`] bytes (longer ones are skipped whole):
/// memory stays bounded whatever the file holds.
struct Lines<R> {
    r: R,
    line: Vec<u8>,
}

/// A journal line is at most 20 digits, a space, 64 hex digits and a newline.
const MAX_LINE: u64 = 96;

impl<R: BufRead> Lines<R> {
    /// The next line without its newline (empty for an overlong one); `None` at the end.
    fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.line.clear();
        let n = (&mut self.r).take(MAX_LINE).read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            return Ok(Some(&self.line));
        }
        if n as u64 == MAX_LINE {
            // Overlong: skip to the end of the line.
            loop {
                self.line.clear();
                let n = (&mut self.r).take(4096).read_until(b'\n', &mut self.line)?;
                if n == 0 || self.line.last() == Some(&b'\n') {
                    break;
                }
            }
            self.line.clear();
        }
        Ok(Some(&self.line))
    }
}

fn parse(line: &[u8]) -> Option<(u64, Key)> {
    let (exp, hex) = std::str::from_utf8(line).ok()?.split_once(' ')?;
    Some((exp.parse().ok()?, crate::transport::tls::parse_fingerprint(hex)?))
}

/// Writes `seen` to a temporary file, fsyncs it, renames it over `path`, fsyncs the
/// directory; returns the new file, opened for appending before the rename (so it is the
/// inode `path` names), and its length. On error, whether the rename had happened.
fn rewrite(path: &Path, seen: &HashMap<Key, u64>) -> Result<(File, u64), (io::Error, bool)> {
    let tmp = path.with_extension("journal.tmp");
    let written = (|| {
        let file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        let mut out = io::BufWriter::new(file);
        for (k, exp) in seen {
            writeln!(out, "{exp} {}", crate::transport::tls::hex(k))?;
        }
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        let len = file.metadata()?.len();
        Ok((OpenOptions::new().append(true).open(&tmp)?, len))
    })();
    let (file, len) = written.map_err(|e| (e, false))?;
    std::fs::rename(&tmp, path).map_err(|e| (e, false))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| (e, true))?;
    Ok((file, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    /// A record journalled in a fresh directory (kept alive by the returned guard).
    fn journal() -> (tempfile::TempDir, PathBuf, Replay) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.journal");
        let mut r = Replay::default();
        assert_eq!(r.open(&path, NOW, 100).expect("open"), 0);
        (dir, path, r)
    }

    #[test]
    fn the_journal_is_created_with_the_first_token_only() {
        let (_dir, path, mut r) = journal();
        assert!(!path.exists(), "nothing written before a token is used");
        r.remember("first", NOW + 60, 10, NOW).expect("recorded");
        assert_eq!(std::fs::read_to_string(&path).expect("created").lines().count(), 1);
    }

    #[test]
    fn a_token_id_is_used_once_and_a_full_record_refuses_rather_than_evicts() {
        let mut r = Replay::default();
        assert!(r.remember("one", NOW + 60, 2, NOW).is_ok());
        assert!(matches!(r.remember("one", NOW + 60, 2, NOW), Err(ReplayError::Replayed)));
        assert!(r.remember("two", NOW + 60, 2, NOW).is_ok());
        assert!(matches!(r.remember("three", NOW + 60, 2, NOW), Err(ReplayError::Full)));
        // Still remembered: the full record evicted nothing.
        assert!(matches!(r.remember("one", NOW + 60, 2, NOW), Err(ReplayError::Replayed)));
        // Expired entries make room.
        let mut r = Replay::default();
        assert!(r.remember("old", NOW - 1, 1, NOW).is_ok());
        assert!(r.remember("new", NOW + 60, 1, NOW).is_ok());
    }

    #[test]
    fn the_journal_survives_a_restart_and_forgets_expired_tokens() {
        let (_dir, path, mut r) = journal();
        assert!(r.seen.is_empty());
        r.remember("used", NOW + 60, 10, NOW).expect("recorded");
        r.remember("short", NOW + 5, 10, NOW).expect("recorded");
        drop(r);
        // A torn last line (a crash mid-write) and garbage are skipped.
        let mut f = OpenOptions::new().append(true).open(&path).expect("append");
        f.write_all(b"garbage\n123 abc\n").expect("write");
        f.write_all(&[b'7'; 100_000]).expect("an overlong line");
        f.write_all(b"\n99999999 0123").expect("write");
        drop(f);
        let mut r = Replay::default();
        assert_eq!(r.open(&path, NOW + 10, 100).expect("reopen"), 1, "the expired one is forgotten");
        assert!(matches!(r.remember("used", NOW + 60, 10, NOW + 10), Err(ReplayError::Replayed)));
        assert!(r.remember("short", NOW + 60, 10, NOW + 10).is_ok());
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "rewritten at start, then one appended: {text}");
    }

    #[test]
    fn a_lowered_limit_forgets_no_used_token_and_refuses_new_ones() {
        let (_dir, path, mut r) = journal();
        for i in 0..10 {
            r.remember(&format!("t{i}"), NOW + 60, 100, NOW).expect("recorded");
        }
        let mut r = Replay::default();
        assert_eq!(r.open(&path, NOW, 4).expect("reopen"), 10);
        assert!(matches!(r.remember("t9", NOW + 60, 4, NOW), Err(ReplayError::Replayed)));
        assert!(matches!(r.remember("new", NOW + 60, 4, NOW), Err(ReplayError::Full)));
    }

    #[test]
    fn a_torn_line_is_cut_off_before_the_next_append() {
        let (_dir, path, mut r) = journal();
        r.remember("first", NOW + 60, 100, NOW).expect("recorded");
        // A torn line, as a write that failed halfway leaves it.
        if let Some(j) = r.journal.as_mut() {
            j.file.write_all(b"12345 abcd").expect("torn");
        }
        r.remember("second", NOW + 60, 100, NOW).expect("recorded");
        let mut again = Replay::default();
        assert_eq!(
            again.open(&path, NOW, 100).expect("reopen"),
            2,
            "both survive: no line glued to a fragment"
        );
    }

    #[test]
    fn the_journal_is_compacted_once_it_holds_twice_the_live_entries() {
        let (_dir, path, mut r) = journal();
        for i in 0..3000 {
            // Each expires before the next is recorded.
            r.remember(&format!("t{i}"), NOW + i, 10, NOW + i).expect("recorded");
        }
        let lines = std::fs::read_to_string(&path).expect("read").lines().count();
        assert!(lines <= 1030, "{lines} lines for a handful of live tokens");
    }

    #[test]
    fn a_token_that_cannot_be_recorded_is_refused_not_admitted() {
        let (_dir, path, mut r) = journal();
        r.remember("first", NOW + 60, 10, NOW).expect("recorded");
        // The journal's file handle now writes nowhere: a read-only handle fails each write
        // (and cannot cut the file back either: the journal is then broken).
        if let Some(j) = r.journal.as_mut() {
            j.file = File::open(&path).expect("read-only handle");
        }
        assert!(matches!(r.remember("x", NOW + 60, 10, NOW), Err(ReplayError::Journal { .. })));
        assert!(!r.seen.contains_key(&key("x")), "an unrecorded token is not remembered as admitted either");
        assert!(r.journal.as_ref().is_some_and(|j| j.broken.is_some()));
        if let Some(j) = r.journal.as_mut() {
            j.file = OpenOptions::new().append(true).open(&path).expect("append handle");
        }
        let refused = r.remember("y", NOW + 60, 10, NOW).expect_err("a broken journal refuses");
        assert!(refused.to_string().contains("restart the daemon"), "{refused}");
    }
}
