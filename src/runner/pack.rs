//! Client side of `ansible-runner transmit`: zip a private data directory the way Python's
//! `stream_dir` does (spec §0.3) and write the transmit stream (spec §1.1).
//!
//! Differences from Python, all deliberate: names are sorted (Python uses `scandir` order),
//! top-level symlinks are named `name` rather than `./name` (Python's `unstream_dir` joins the
//! name onto the target either way), sockets and device files are skipped instead of crashing,
//! and timestamps are UTC. Setuid/setgid/sticky bits are not stored (the `zip` crate keeps only
//! the 0o777 bits); Python's extractor `chmod`s to exactly what is stored.

use crate::runner::dostime::{self, Civil};
use crate::runner::pyjson;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

/// Raw zip bytes read per base64 chunk (a multiple of 3, so no padding mid-stream).
const B64_READ: usize = 48 * 1024;
/// Buffer size for copying file contents into the archive.
const COPY_BUF: usize = 64 * 1024;
/// Python's `zipfile.ZIP64_LIMIT`; files whose size × 1.05 exceeds it get zip64 headers.
const ZIP64_LIMIT: u64 = (1 << 31) - 1;
/// The eof line that ends every runner stream.
pub const EOF_LINE: &[u8] = b"{\"eof\": true}\n";

/// Why a directory could not be packed or a stream written.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("writing the runner stream: {0}")]
    Stream(#[source] io::Error),
    #[error("{path}: name is not valid UTF-8")]
    NonUtf8 { path: PathBuf },
    #[error("building the zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("zip source ended after {got} of {expected} bytes")]
    ShortZip { expected: u64, got: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Dir,
    File,
    Symlink,
}

struct Entry {
    rel: String,
    path: PathBuf,
    kind: EntryKind,
    meta: Metadata,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |source| PackError::Io { path: path.to_owned(), source }
}

/// Zips `root` into `out` (e.g. a fresh temp file) and returns the archive size in bytes.
///
/// Symlinks are never followed. `progress` is called with the running total of file-content
/// bytes read so far. The archive is left positioned at its end.
pub fn zip_dir<F: Read + Write + Seek>(
    root: &Path,
    out: &mut F,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, PackError> {
    zip_dir_excluding(root, out, progress, &[])
}

/// Like [`zip_dir`], leaving out the top-level entries named in `exclude` (and everything
/// below them), e.g. `artifacts` of earlier runs, which a remote worker never reads.
pub fn zip_dir_excluding<F: Read + Write + Seek>(
    root: &Path,
    out: &mut F,
    progress: &mut dyn FnMut(u64),
    exclude: &[&str],
) -> Result<u64, PackError> {
    let (entries, _) = walk(root, exclude)?;
    let start = out.stream_position().map_err(PackError::Stream)?;
    let mut zw = ZipWriter::new(&mut *out);
    let mut done = 0u64;
    for e in &entries {
        add_entry(&mut zw, e, &mut done, progress)?;
    }
    zw.finish()?;
    let end = out.stream_position().map_err(PackError::Stream)?;
    patch_central_directory(out, start)?;
    out.seek(SeekFrom::Start(end)).map_err(PackError::Stream)?;
    Ok(end - start)
}

/// The special files below `root` (FIFOs, sockets, devices) that [`zip_dir_excluding`]
/// leaves out, with what each is, sorted by path: a client says so before it sends a
/// private data dir.
pub fn special_files(root: &Path, exclude: &[&str]) -> Result<Vec<(PathBuf, &'static str)>, PackError> {
    let (_, mut skipped) = walk(root, exclude)?;
    skipped.sort();
    Ok(skipped)
}

/// All entries below `root` (root excluded), sorted by relative path bytes, and the
/// special files left out.
#[allow(clippy::type_complexity)]
fn walk(root: &Path, exclude: &[&str]) -> Result<(Vec<Entry>, Vec<(PathBuf, &'static str)>), PackError> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for dent in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let dent = dent.map_err(io_err(&dir))?;
            let path = dent.path();
            let name = dent.file_name();
            let name = name.to_str().ok_or_else(|| PackError::NonUtf8 { path: path.clone() })?;
            if prefix.is_empty() && exclude.contains(&name) {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let ft = meta.file_type();
            let kind = if ft.is_symlink() {
                EntryKind::Symlink
            } else if ft.is_dir() {
                stack.push((path.clone(), format!("{rel}/")));
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File
            } else {
                let what = if ft.is_fifo() {
                    "FIFO"
                } else if ft.is_socket() {
                    "socket"
                } else if ft.is_char_device() {
                    "character device"
                } else if ft.is_block_device() {
                    "block device"
                } else {
                    "special file"
                };
                skipped.push((path, what));
                continue;
            };
            out.push(Entry { rel, path, kind, meta });
        }
    }
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok((out, skipped))
}

fn dos_time(c: Civil) -> DateTime {
    // Civil values come from dos_clamped, so they are always in DOS range; the fallback
    // (1980-01-01) is unreachable in practice.
    let year = u16::try_from(c.year).unwrap_or(1980);
    DateTime::from_date_and_time(year, c.month, c.day, c.hour, c.minute, c.second).unwrap_or_default()
}

fn add_entry<W: Write + Seek>(
    zw: &mut ZipWriter<W>,
    e: &Entry,
    done: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), PackError> {
    let mode = e.meta.mode();
    let mtime = dos_time(dostime::dos_clamped(e.meta.mtime()));
    let opts = SimpleFileOptions::default().unix_permissions(mode).last_modified_time(mtime);
    match e.kind {
        EntryKind::Dir => zw.add_directory(e.rel.as_str(), opts)?,
        EntryKind::Symlink => {
            let target = fs::read_link(&e.path).map_err(io_err(&e.path))?;
            let target = target.to_str().ok_or_else(|| PackError::NonUtf8 { path: e.path.clone() })?;
            let opts = opts.unix_permissions(0o777).last_modified_time(DateTime::default());
            zw.add_symlink(e.rel.as_str(), target, opts)?;
        }
        EntryKind::File => {
            let size = e.meta.len();
            let opts = opts
                .compression_method(CompressionMethod::Deflated)
                .large_file(size.saturating_mul(21) / 20 > ZIP64_LIMIT);
            zw.start_file(e.rel.as_str(), opts)?;
            copy_file(zw, &e.path, done, progress)?;
        }
    }
    Ok(())
}

fn copy_file<W: Write>(
    zw: &mut W,
    path: &Path,
    done: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), PackError> {
    let nofollow = nix::fcntl::OFlag::O_NOFOLLOW.bits();
    let mut f = OpenOptions::new().read(true).custom_flags(nofollow).open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(PackError::Io { path: path.to_owned(), source: e });
            }
        };
        zw.write_all(&buf[..n]).map_err(PackError::Stream)?;
        *done += n as u64;
        progress(*done);
    }
}

/// Makes the central directory match Python's writer: `version made by` 0x0314 (Unix, 2.0)
/// and the MS-DOS directory bit (0x10) on directory entries.
fn patch_central_directory<F: Read + Write + Seek>(f: &mut F, start: u64) -> Result<(), PackError> {
    let mut patches = Vec::new();
    {
        f.seek(SeekFrom::Start(start)).map_err(PackError::Stream)?;
        let mut archive = ZipArchive::new(&mut *f)?;
        for i in 0..archive.len() {
            let file = archive.by_index_raw(i)?;
            let (_, minor) = file.version_made_by();
            patches.push((file.central_header_start(), minor, file.is_dir()));
        }
    }
    for (at, minor, is_dir) in patches {
        let made_by = [minor.max(20), 3];
        f.seek(SeekFrom::Start(start + at + 4)).map_err(PackError::Stream)?;
        f.write_all(&made_by).map_err(PackError::Stream)?;
        if is_dir {
            let mut attr = [0u8; 4];
            f.seek(SeekFrom::Start(start + at + 38)).map_err(PackError::Stream)?;
            f.read_exact(&mut attr).map_err(PackError::Stream)?;
            let attr = u32::from_le_bytes(attr) | 0x10;
            f.seek(SeekFrom::Start(start + at + 38)).map_err(PackError::Stream)?;
            f.write_all(&attr.to_le_bytes()).map_err(PackError::Stream)?;
        }
    }
    f.flush().map_err(PackError::Stream)
}

/// Writes `{"zipfile": size}` LF, then exactly `size` bytes from `zip` as unwrapped, padded
/// base64 with no trailing LF (the next line must follow immediately).
pub fn write_zip_section<W: Write + ?Sized>(
    out: &mut W,
    zip: &mut dyn Read,
    size: u64,
) -> Result<(), PackError> {
    let header = pyjson::line(&serde_json::json!({ "zipfile": size }));
    out.write_all(&header).map_err(PackError::Stream)?;
    let mut buf = vec![0u8; B64_READ];
    let mut enc = String::with_capacity(B64_READ / 3 * 4);
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left.min(B64_READ as u64)).unwrap_or(B64_READ);
        let got = read_full(zip, &mut buf[..want])?;
        if got < want {
            return Err(PackError::ShortZip { expected: size, got: size - left + got as u64 });
        }
        enc.clear();
        STANDARD.encode_string(&buf[..got], &mut enc);
        out.write_all(enc.as_bytes()).map_err(PackError::Stream)?;
        left -= got as u64;
    }
    Ok(())
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, PackError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PackError::Stream(e)),
        }
    }
    Ok(n)
}

/// Writes a whole transmit stream: the kwargs line, an optional zip section (`size` bytes read
/// from the reader's current position), and the eof line.
pub fn write_transmit<W: Write + ?Sized>(
    out: &mut W,
    kwargs: &Map<String, Value>,
    zip: Option<(&mut dyn Read, u64)>,
) -> Result<(), PackError> {
    let mut line = Map::new();
    line.insert("kwargs".to_owned(), Value::Object(kwargs.clone()));
    out.write_all(&pyjson::line(&Value::Object(line))).map_err(PackError::Stream)?;
    if let Some((reader, size)) = zip {
        write_zip_section(out, reader, size)?;
    }
    out.write_all(EOF_LINE).map_err(PackError::Stream)?;
    out.flush().map_err(PackError::Stream)
}

/// Convenience: zips `pdd` into an anonymous temp file and writes the full transmit stream.
pub fn transmit_dir<W: Write + ?Sized>(
    out: &mut W,
    kwargs: &Map<String, Value>,
    pdd: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, PackError> {
    let mut tmp: File = tempfile::tempfile().map_err(PackError::Stream)?;
    let size = zip_dir(pdd, &mut tmp, progress)?;
    tmp.seek(SeekFrom::Start(0)).map_err(PackError::Stream)?;
    write_transmit(out, kwargs, Some((&mut tmp, size)))?;
    Ok(size)
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
