//! Targets on ansible-runner input: the transmit/worker stream decoder and zip extraction.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::runner::{DecodeError, DecodeLimits, ExtractLimits, Item, StreamDecoder, extract_zip};

const LIMITS: DecodeLimits = DecodeLimits { max_line: 512, max_zip: 8192, max_zips: 2 };

/// What a decode produced, zip data byte by byte (its chunking may follow the input's).
#[derive(Debug, PartialEq)]
enum Seen {
    Line(Vec<u8>),
    ZipStart(u64),
    Zip(u8),
    ZipEnd,
    Eof,
}

/// Decodes `data` fed in pieces of the given sizes (cycled); returns the items and the
/// error kind it ended with, if any.
fn decode(data: &[u8], pieces: &[usize]) -> (Vec<Seen>, Option<std::mem::Discriminant<DecodeError>>) {
    let mut dec = StreamDecoder::new(LIMITS);
    let mut seen: Vec<Seen> = Vec::new();
    let mut rest = data;
    let mut i = 0;
    loop {
        loop {
            match dec.next_item() {
                Ok(None) => break,
                Ok(Some(item)) => match item {
                    Item::Line { raw, value } => {
                        assert_eq!(serde_json::from_slice::<serde_json::Value>(&raw).ok(), Some(value));
                        assert!(raw.len() <= LIMITS.max_line && !raw.contains(&b'\n'));
                        seen.push(Seen::Line(raw.to_vec()));
                    }
                    Item::ZipStart { size } => {
                        assert!(size <= LIMITS.max_zip);
                        seen.push(Seen::ZipStart(size));
                    }
                    Item::ZipData(d) => seen.extend(d.iter().map(|b| Seen::Zip(*b))),
                    Item::ZipEnd => seen.push(Seen::ZipEnd),
                    Item::Eof => seen.push(Seen::Eof),
                },
                Err(e) => return (seen, Some(std::mem::discriminant(&e))),
            }
        }
        if rest.is_empty() {
            break;
        }
        let n = pieces[i % pieces.len()].clamp(1, rest.len());
        i += 1;
        dec.feed(&rest[..n]);
        rest = &rest[n..];
    }
    let end = dec.finish().err().map(|e| std::mem::discriminant(&e));
    (seen, end)
}

/// `runner::StreamDecoder` on the input (after two bytes choosing how it is split), fed
/// whole and in pieces: the result must not depend on where the input was split, and zip
/// sections must deliver exactly their announced size.
pub fn transmit_stream(data: &[u8]) {
    let (pieces, data) = match data {
        [a, b, rest @ ..] => (vec![usize::from(*a % 64) + 1, usize::from(*b % 8) + 1], rest),
        _ => (vec![1], data),
    };
    let whole = decode(data, &[usize::MAX]);
    let split = decode(data, &pieces);
    // The same items and the same end. A stream that fails may have delivered more of a zip
    // section before the error when it came in pieces (chunks are decoded as they arrive),
    // so then one must be a prefix of the other.
    assert_eq!(whole.1, split.1, "the outcome depends on how the input is split: {whole:?} vs {split:?}");
    let n = whole.0.len().min(split.0.len());
    assert_eq!(whole.0[..n], split.0[..n], "decoding depends on how the input is split");
    assert!(
        whole.1.is_some() || whole.0.len() == split.0.len(),
        "decoding depends on how the input is split"
    );
    let (mut size, mut got) = (0, 0);
    for s in &whole.0 {
        match s {
            Seen::ZipStart(n) => (size, got) = (*n, 0),
            Seen::Zip(_) => got += 1,
            Seen::ZipEnd => assert_eq!(got, size, "zip section of another size than announced"),
            _ => {}
        }
        assert!(got <= size, "zip section longer than announced");
    }
}

/// A scratch directory per extraction, on tmpfs when there is one.
fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let n = N.fetch_add(1, Ordering::Relaxed);
    base.join(format!("receptord-fuzz-{}-{n}", std::process::id()))
}

/// `runner::extract_zip` on the input as an archive, into a destination that already holds
/// a directory, a file and a symlink pointing outside it. Nothing may be written outside the
/// destination, and every symlink extracted must resolve inside it.
pub fn extract(data: &[u8]) {
    let root = scratch();
    let dest = root.join("d");
    let outside = root.join("outside");
    fs::create_dir_all(dest.join("sub")).expect("scratch dir");
    fs::create_dir_all(&outside).expect("scratch dir");
    fs::write(dest.join("file"), b"x").expect("scratch file");
    std::os::unix::fs::symlink("../outside", dest.join("out")).expect("scratch symlink");
    let limits =
        ExtractLimits { max_total_bytes: 1 << 20, max_entries: 64, max_ratio: 100, ratio_min_size: 4096 };
    let result = extract_zip(std::io::Cursor::new(data), &dest, &limits);
    let check = || -> Result<(), String> {
        let mut top: Vec<_> =
            fs::read_dir(&root).map_err(|e| e.to_string())?.flatten().map(|e| e.file_name()).collect();
        top.sort();
        if top != ["d", "outside"] {
            return Err(format!("extraction wrote beside the destination: {top:?}"));
        }
        if fs::read_dir(&outside).map_err(|e| e.to_string())?.next().is_some() {
            return Err("extraction wrote through a symlink out of the destination".into());
        }
        if fs::read_link(dest.join("out")).ok().as_deref() != Some(Path::new("../outside")) {
            // Replacing it is fine; following it is not (checked above).
            return Ok(());
        }
        walk(&dest, &dest)
    };
    let verdict = check();
    let _ = fs::remove_dir_all(&root);
    if let Err(e) = verdict {
        panic!("{e} (extraction returned {result:?})");
    }
}

/// Every symlink under `dir` (except the planted `out`) points inside `dest`; no special
/// files, no setuid/setgid bits.
fn walk(dest: &Path, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            if path == dest.join("out") {
                continue;
            }
            let target = fs::read_link(&path).map_err(|e| e.to_string())?;
            if !inside(dest, dir, &target) {
                return Err(format!("symlink {} -> {} leads outside", path.display(), target.display()));
            }
        } else if ft.is_dir() {
            walk(dest, &path)?;
        } else if !ft.is_file() {
            return Err(format!("special file {}", path.display()));
        } else if meta.permissions().mode() & 0o6000 != 0 {
            return Err(format!("setuid/setgid bit kept on {}", path.display()));
        }
    }
    Ok(())
}

/// Whether `target`, read relative to `dir`, stays inside `dest` (lexically).
fn inside(dest: &Path, dir: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let Ok(rel) = dir.strip_prefix(dest) else { return false };
    let mut depth: Vec<Component<'_>> = rel.components().collect();
    for c in target.components() {
        match c {
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::Normal(_) => depth.push(c),
            Component::CurDir => {}
            _ => return false,
        }
    }
    true
}
