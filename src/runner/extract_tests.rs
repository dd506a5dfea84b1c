//! Unit tests for safe extraction: hostile archives built by hand must be refused without
//! touching anything outside the destination, and benign ones must extract like Python's
//! `unstream_dir`.

use super::*;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, symlink};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
    /// A file entry whose central-directory mode is then patched to this raw value.
    Raw(&'a str, u32),
}

fn build_zip(entries: &[E<'_>]) -> Vec<u8> {
    let mut zw = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    let mut patches = Vec::new();
    for e in entries {
        match e {
            E::Dir(n) => zw.add_directory(*n, opts).expect("dir"),
            E::File(n, data) => {
                zw.start_file(*n, opts).expect("file");
                zw.write_all(data).expect("write");
            }
            E::Link(n, t) => zw.add_symlink(*n, *t, opts).expect("link"),
            E::Raw(n, mode) => {
                zw.start_file(*n, opts).expect("file");
                patches.push((n.to_string(), *mode));
            }
        }
    }
    let mut cur = zw.finish().expect("finish");
    for (name, mode) in patches {
        set_mode(&mut cur, &name, mode);
    }
    cur.into_inner()
}

/// Overwrites the central-directory external attributes of `name` with `mode << 16`.
fn set_mode(cur: &mut Cursor<Vec<u8>>, name: &str, mode: u32) {
    let at = {
        let mut a = ZipArchive::new(&mut *cur).expect("archive");
        a.by_name(name).expect("entry").central_header_start()
    };
    cur.seek(SeekFrom::Start(at + 38)).expect("seek");
    cur.write_all(&(mode << 16).to_le_bytes()).expect("patch");
}

struct Sandbox {
    _base: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
    base: PathBuf,
}

fn sandbox() -> Sandbox {
    let base = tempfile::tempdir().expect("tempdir");
    let dest = base.path().join("dest");
    let outside = base.path().join("outside");
    fs::create_dir(&dest).expect("mkdir");
    fs::create_dir(&outside).expect("mkdir");
    Sandbox { base: base.path().to_path_buf(), _base: base, dest, outside }
}

impl Sandbox {
    fn assert_outside_untouched(&self) {
        assert_eq!(fs::read_dir(&self.outside).expect("ls").count(), 0, "outside/ modified");
        let mut top: Vec<_> =
            fs::read_dir(&self.base).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        top.sort();
        assert_eq!(top, ["dest", "outside"], "something was created next to dest");
    }
}

fn expect_refused(zip: Vec<u8>, limits: ExtractLimits, want_entry: &str, want_rule: &str) {
    let sb = sandbox();
    match extract_zip(Cursor::new(zip), &sb.dest, &limits) {
        Err(ExtractError::Refused { entry, rule }) => {
            assert_eq!((entry.as_str(), rule), (want_entry, want_rule));
        }
        other => panic!("expected refusal of {want_entry}: {other:?}"),
    }
    sb.assert_outside_untouched();
}

#[test]
fn refuses_path_traversal_and_absolute_names() {
    let d = ExtractLimits::default();
    expect_refused(
        build_zip(&[E::File("ok", b"x"), E::File("../outside/escape", b"x")]),
        d,
        "../outside/escape",
        rule::PARENT,
    );
    expect_refused(build_zip(&[E::File("a/../../outside/x", b"x")]), d, "a/../../outside/x", rule::PARENT);
    expect_refused(build_zip(&[E::File("/tmp/abs", b"x")]), d, "/tmp/abs", rule::ABSOLUTE);
    expect_refused(build_zip(&[E::File("a\\..\\..\\x", b"x")]), d, "a\\..\\..\\x", rule::BACKSLASH);
    expect_refused(build_zip(&[E::Dir("..")]), d, "../", rule::PARENT);
}

#[test]
fn refuses_escaping_symlinks() {
    let d = ExtractLimits::default();
    expect_refused(
        build_zip(&[E::Link("evil", "/etc"), E::File("evil/passwd", b"x")]),
        d,
        "evil/passwd",
        rule::THROUGH_SYMLINK,
    );
    expect_refused(build_zip(&[E::Link("evil", "/etc")]), d, "evil", rule::SYMLINK_OUT);
    expect_refused(build_zip(&[E::Link("a/up", "../../outside")]), d, "a/up", rule::SYMLINK_OUT);
    expect_refused(build_zip(&[E::Link("a/l", "x/../..")]), d, "a/l", rule::SYMLINK_OUT);
    expect_refused(build_zip(&[E::Link("l", "")]), d, "l", rule::SYMLINK_TARGET);
    // Even a link that stays inside must not be walked through by a later entry.
    expect_refused(
        build_zip(&[E::Dir("sub/"), E::Link("d", "sub"), E::File("d/x", b"x")]),
        d,
        "d/x",
        rule::THROUGH_SYMLINK,
    );
}

#[test]
fn refuses_paths_through_existing_symlinks() {
    let sb = sandbox();
    symlink(&sb.outside, sb.dest.join("pre")).expect("symlink");
    let zip = build_zip(&[E::File("pre/x", b"x")]);
    let err = extract_zip(Cursor::new(zip), &sb.dest, &ExtractLimits::default());
    assert!(matches!(err, Err(ExtractError::Refused { rule: rule::THROUGH_SYMLINK, .. })));
    assert_eq!(fs::read_dir(&sb.outside).expect("ls").count(), 0);
}

#[test]
fn replaces_existing_symlink_instead_of_writing_through_it() {
    let sb = sandbox();
    let victim = sb.outside.join("victim");
    fs::write(&victim, "precious").expect("write");
    symlink(&victim, sb.dest.join("f")).expect("symlink");
    let zip = build_zip(&[E::File("f", b"new")]);
    extract_zip(Cursor::new(zip), &sb.dest, &ExtractLimits::default()).expect("extract");
    assert_eq!(fs::read(&victim).expect("read"), b"precious");
    let meta = fs::symlink_metadata(sb.dest.join("f")).expect("stat");
    assert!(meta.is_file());
    assert_eq!(fs::read(sb.dest.join("f")).expect("read"), b"new");
}

#[test]
fn refuses_special_files() {
    let d = ExtractLimits::default();
    for (mode, name) in [(0o010_644, "fifo"), (0o020_644, "chr"), (0o060_644, "blk"), (0o140_644, "sock")] {
        expect_refused(build_zip(&[E::File("ok", b""), E::Raw(name, mode)]), d, name, rule::SPECIAL);
    }
}

#[test]
fn refuses_zip_bomb_by_ratio() {
    let zeros = vec![0u8; 200 << 20];
    let zip = build_zip(&[E::File("bomb", &zeros)]);
    assert!(zip.len() < 1 << 20, "deflated to {}", zip.len());
    expect_refused(zip, ExtractLimits::default(), "bomb", rule::RATIO);
}

#[test]
fn refuses_by_count_and_total_size() {
    let names: Vec<String> = (0..11).map(|i| format!("f{i:02}")).collect();
    let entries: Vec<E<'_>> = names.iter().map(|n| E::File(n, b"x")).collect();
    let limits = ExtractLimits { max_entries: 10, ..ExtractLimits::default() };
    expect_refused(build_zip(&entries), limits, "(central directory)", rule::COUNT);
    let limits = ExtractLimits { max_total_bytes: 1000, ..ExtractLimits::default() };
    let big = vec![7u8; 600];
    expect_refused(build_zip(&[E::File("a", &big), E::File("b", &big)]), limits, "b", rule::TOTAL);
}

/// A header that under-declares the uncompressed size must not let more bytes through.
#[test]
fn lying_size_header_is_caught() {
    let data = vec![1u8; 4096];
    let mut zip = build_zip(&[E::File("liar", &data)]);
    // Patch the uncompressed size in the local header (offset 22) and central header (24).
    let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").expect("central dir");
    zip[22..26].copy_from_slice(&100u32.to_le_bytes());
    zip[cd + 24..cd + 28].copy_from_slice(&100u32.to_le_bytes());
    let sb = sandbox();
    let err = extract_zip(Cursor::new(zip), &sb.dest, &ExtractLimits::default()).expect_err("must fail");
    assert!(matches!(&err, ExtractError::Refused { rule: rule::OVERSIZE, .. }), "{err:?}");
    let written = fs::metadata(sb.dest.join("liar")).map(|m| m.len()).unwrap_or(0);
    assert!(written <= 100, "wrote {written} bytes");
    sb.assert_outside_untouched();
}

#[test]
fn extracts_like_unstream_dir() {
    let sb = sandbox();
    fs::create_dir(sb.dest.join("keep")).expect("mkdir");
    fs::set_permissions(sb.dest.join("keep"), fs::Permissions::from_mode(0o750)).expect("chmod");
    fs::write(sb.dest.join("over"), "old contents").expect("write");
    let zip = build_zip(&[
        E::Dir("keep/"),
        E::File("over", b"new"),
        E::Dir("ro/"),
        E::File("ro/x.sh", b"#!/bin/sh\n"),
        E::Link("./toplink", "ro/x.sh"),
        E::Link("ro/up", "../over"),
        E::File("deep/auto/parent", b"p"),
        E::Raw("suid", 0o104_755),
        E::Raw("nomode", 0),
    ]);
    let mut cur = Cursor::new(zip);
    set_mode(&mut cur, "ro/", 0o040_555);
    set_mode(&mut cur, "ro/x.sh", 0o100_755);
    let stats = extract_zip(cur, &sb.dest, &ExtractLimits::default()).expect("extract");
    assert_eq!(stats.skipped, 1);
    assert_eq!((stats.files, stats.dirs, stats.symlinks), (5, 1, 2));
    let mode = |p: &str| fs::symlink_metadata(sb.dest.join(p)).expect(p).mode() & 0o7777;
    assert_eq!(mode("keep"), 0o750, "existing dir untouched");
    assert_eq!(fs::read(sb.dest.join("over")).expect("read"), b"new");
    assert_eq!(mode("ro"), 0o755, "owner rwx forced on dirs");
    assert_eq!(mode("ro/x.sh"), 0o755);
    assert_eq!(mode("suid"), 0o755, "setuid dropped");
    assert_eq!(mode("nomode"), 0o644);
    assert_eq!(fs::read_link(sb.dest.join("toplink")).expect("link"), Path::new("ro/x.sh"));
    assert_eq!(fs::read_link(sb.dest.join("ro/up")).expect("link"), Path::new("../over"));
    assert_eq!(fs::read(sb.dest.join("deep/auto/parent")).expect("read"), b"p");
}

#[test]
fn round_trip_with_pack_keeps_modes_links_and_mtimes() {
    let src = tempfile::tempdir().expect("tempdir");
    let s = src.path();
    fs::create_dir_all(s.join("inventory/group_vars")).expect("mkdir");
    fs::write(s.join("inventory/hosts"), "localhost\n").expect("write");
    fs::write(s.join("run.sh"), "#!/bin/sh\n").expect("write");
    fs::set_permissions(s.join("run.sh"), fs::Permissions::from_mode(0o750)).expect("chmod");
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001);
    File::options().write(true).open(s.join("run.sh")).expect("open").set_modified(mtime).expect("mtime");
    symlink("inventory/hosts", s.join("hosts")).expect("symlink");
    let mut tmp = tempfile::tempfile().expect("tmp");
    crate::runner::pack::zip_dir(s, &mut tmp, &mut |_| {}).expect("zip");
    tmp.seek(SeekFrom::Start(0)).expect("seek");
    let sb = sandbox();
    extract_zip(tmp, &sb.dest, &ExtractLimits::default()).expect("extract");
    let meta = fs::metadata(sb.dest.join("run.sh")).expect("stat");
    assert_eq!(meta.mode() & 0o7777, 0o750);
    // DOS time has 2-second resolution.
    assert_eq!(meta.mtime(), 1_700_000_000);
    assert!(sb.dest.join("inventory/group_vars").is_dir());
    assert_eq!(fs::read_link(sb.dest.join("hosts")).expect("link"), Path::new("inventory/hosts"));
    assert_eq!(fs::read(sb.dest.join("hosts")).expect("read"), b"localhost\n");
}

/// Bytes captured from a real `ansible-runner transmit src -p test.yml -i job42` (2.4.3): the
/// zip has Python's `./toplink` name, dir entries with the 0x10 bit, and a skipped FIFO.
#[test]
fn real_python_transmit_stream_round_trips() {
    use crate::runner::decode::{DecodeLimits, Item, StreamDecoder};
    let input: &[u8] = include_bytes!("testdata/py_transmit.out");
    let mut dec = StreamDecoder::new(DecodeLimits::default());
    let (mut zip, mut kwargs_line) = (Vec::new(), None);
    for b in input {
        dec.feed(std::slice::from_ref(b));
        while let Some(item) = dec.next_item().expect("decode") {
            match item {
                Item::Line { raw, value } => kwargs_line = Some((raw, value)),
                Item::ZipData(d) => zip.extend_from_slice(&d),
                Item::ZipStart { size } => assert_eq!(size, 1360),
                Item::ZipEnd | Item::Eof => {}
            }
        }
    }
    dec.finish().expect("complete");
    let (raw, value) = kwargs_line.expect("kwargs line");
    assert_eq!(crate::runner::pyjson::to_string(&value).as_bytes(), &raw[..]);
    let sb = sandbox();
    let stats = extract_zip(Cursor::new(zip), &sb.dest, &ExtractLimits::default()).expect("extract");
    assert_eq!((stats.files, stats.dirs, stats.symlinks), (4, 5, 2));
    let d = &sb.dest;
    assert_eq!(fs::read_link(d.join("toplink")).expect("link"), Path::new("sub"));
    assert_eq!(fs::read_link(d.join("sub/link")).expect("link"), Path::new("../project/test.yml"));
    assert_eq!(fs::metadata(d.join("sub/deep/x.sh")).expect("stat").mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(d.join("env/extravars")).expect("stat").mtime(), 1_795_888_040);
    sb.assert_outside_untouched();
}
