//! Pure checks used by the safe extractor: zip entry names, symlink targets, and a cheap
//! upper bound on the number of central-directory entries, computed before the `zip` crate
//! loads the whole central directory into memory.
//!
//! Each check returns the violated rule (a `&'static str` from [`rule`](super::extract::rule))
//! so the caller can name the entry.

use super::extract::rule;
use std::io::{self, Read, Seek, SeekFrom};

/// Smallest central-directory file header (fixed part only).
const MIN_CDFH: u64 = 46;
const CDFH_SIG: &[u8; 4] = b"PK\x01\x02";

/// Splits a zip name into components, dropping empty and `.` parts like Python's
/// `ZipFile.extract`, and refusing absolute names, `..`, NUL bytes and backslashes (a path
/// separator to Windows tools and to zips made there: `a\..\..\x` is not a name anyone means).
pub(crate) fn split_name(name: &str) -> Result<Vec<String>, &'static str> {
    if name.starts_with('/') {
        return Err(rule::ABSOLUTE);
    }
    if name.contains('\0') {
        return Err(rule::BAD_NAME);
    }
    if name.contains('\\') {
        return Err(rule::BACKSLASH);
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(rule::PARENT),
            p => parts.push(p.to_owned()),
        }
    }
    Ok(parts)
}

/// Checks the target of a symlink entry that lives `depth` directories below dest.
///
/// Accepted: relative targets whose `..` parts all come first and never climb above dest.
/// Because `..` never follows a name, no symlink met while resolving can be "backed out of",
/// so every link we create resolves inside dest, even through other links we created.
pub(crate) fn check_link_target(depth: usize, target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() || target.contains(&0) {
        return Err(rule::SYMLINK_TARGET);
    }
    if target.starts_with(b"/") {
        return Err(rule::SYMLINK_OUT);
    }
    let mut depth = depth;
    let mut descended = false;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if descended => return Err(rule::SYMLINK_OUT),
            b".." => depth = depth.checked_sub(1).ok_or(rule::SYMLINK_OUT)?,
            _ => descended = true,
        }
    }
    Ok(())
}

/// Fails with [`rule::COUNT`] when the archive could hold more than `max_entries` entries.
///
/// Every central-directory header starts with `PK\x01\x02` and takes at least 46 bytes, so
/// the number of non-overlapping signature occurrences bounds what any zip reader can parse,
/// whichever end-of-central-directory record it picks. Small files are accepted without a
/// scan. The reader is left at offset 0.
pub(crate) fn bound_entry_count<R: Read + Seek>(
    r: &mut R,
    max_entries: u64,
) -> io::Result<Result<(), &'static str>> {
    let len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    if len / MIN_CDFH <= max_entries {
        return Ok(Ok(()));
    }
    let mut buf = vec![0u8; 64 * 1024 + 3];
    let (mut carry, mut count) = (0usize, 0u64);
    loop {
        let n = r.read(&mut buf[carry..])?;
        if n == 0 {
            break;
        }
        let end = carry + n;
        let mut i = 0;
        while i + 4 <= end {
            if &buf[i..i + 4] == CDFH_SIG {
                count += 1;
                i += 4;
            } else {
                i += 1;
            }
        }
        if count > max_entries {
            r.seek(SeekFrom::Start(0))?;
            return Ok(Err(rule::COUNT));
        }
        // Keep the unexamined tail (at most 3 bytes) for the next round.
        let keep = end - i.min(end);
        buf.copy_within(end - keep..end, 0);
        carry = keep;
    }
    r.seek(SeekFrom::Start(0))?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn names() {
        assert_eq!(split_name("./a//b/./c"), Ok(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(split_name("./"), Ok(vec![]));
        assert_eq!(split_name("/etc/passwd"), Err(rule::ABSOLUTE));
        assert_eq!(split_name("a/../b"), Err(rule::PARENT));
        assert_eq!(split_name("a\0b"), Err(rule::BAD_NAME));
        assert_eq!(split_name("a\\..\\b"), Err(rule::BACKSLASH));
        assert_eq!(split_name("dir\\file"), Err(rule::BACKSLASH));
    }

    #[test]
    fn link_targets() {
        assert_eq!(check_link_target(0, b"sub/x"), Ok(()));
        assert_eq!(check_link_target(0, b"."), Ok(()));
        assert_eq!(check_link_target(2, b"../../x/./y"), Ok(()));
        assert_eq!(check_link_target(2, b"../../../x"), Err(rule::SYMLINK_OUT));
        assert_eq!(check_link_target(0, b".."), Err(rule::SYMLINK_OUT));
        assert_eq!(check_link_target(3, b"a/.."), Err(rule::SYMLINK_OUT));
        assert_eq!(check_link_target(3, b"/etc"), Err(rule::SYMLINK_OUT));
        assert_eq!(check_link_target(3, b""), Err(rule::SYMLINK_TARGET));
    }

    #[test]
    fn entry_count_bound() {
        let mut data = vec![0u8; 46 * 20];
        for k in 0..12 {
            // Signatures straddling the 64 KiB read boundary are found too.
            data.splice(k * 70..k * 70, CDFH_SIG.iter().copied());
        }
        assert_eq!(bound_entry_count(&mut Cursor::new(&data), 11).expect("io"), Err(rule::COUNT));
        assert_eq!(bound_entry_count(&mut Cursor::new(&data), 12).expect("io"), Ok(()));
        assert_eq!(bound_entry_count(&mut Cursor::new(&data), 1000).expect("io"), Ok(()));
        let mut big = vec![b'P'; 64 * 1024 - 2];
        big.extend_from_slice(CDFH_SIG);
        big.extend_from_slice(&[0u8; 100]);
        assert_eq!(bound_entry_count(&mut Cursor::new(&big), 0).expect("io"), Err(rule::COUNT));
        let mut trickle = Trickle(Cursor::new(data));
        assert_eq!(bound_entry_count(&mut trickle, 11).expect("io"), Err(rule::COUNT));
        assert_eq!(bound_entry_count(&mut trickle, 12).expect("io"), Ok(()));
    }

    /// Returns at most 3 bytes per read, so signatures straddle reads.
    struct Trickle(Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.read(&mut buf[..n])
        }
    }

    impl Seek for Trickle {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.0.seek(pos)
        }
    }
}
