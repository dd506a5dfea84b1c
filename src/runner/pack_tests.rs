//! Unit tests for the transmit-side packer: archive layout as Python's `stream_dir` writes it
//! and the exact transmit stream bytes.

use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::{Duration, SystemTime};

fn sample_pdd() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    for d in ["project", "inventory", "env", "sub/deep", "empty"] {
        fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    fs::write(r.join("project/test.yml"), "- hosts: all\n").expect("write");
    fs::write(r.join("inventory/hosts"), "localhost\n").expect("write");
    fs::write(r.join("env/extravars"), "{\"greeting\": \"hi\"}\n").expect("write");
    fs::write(r.join("sub/deep/x.sh"), "#!/bin/sh\necho hi\n").expect("write");
    fs::set_permissions(r.join("sub/deep/x.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(r.join("old"), "").expect("write");
    let old = File::options().write(true).open(r.join("old")).expect("open");
    old.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(157_766_400)).expect("mtime");
    symlink("../project/test.yml", r.join("sub/link")).expect("symlink");
    symlink("sub", r.join("toplink")).expect("symlink");
    nix::unistd::mkfifo(&r.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    dir
}

struct RawEntry {
    name: String,
    made_by: u16,
    method: u16,
    flags: u16,
    attr: u32,
    extra_len: u16,
}

/// Walks the central directory by hand so the test checks the bytes, not the zip crate's view.
fn central_entries(zip: &[u8]) -> Vec<RawEntry> {
    let u16_at = |o: usize| u16::from_le_bytes([zip[o], zip[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([zip[o], zip[o + 1], zip[o + 2], zip[o + 3]]);
    let eocd = zip.len() - 22;
    assert_eq!(u32_at(eocd), 0x0605_4b50, "no comment, plain EOCD");
    let mut at = u32_at(eocd + 16) as usize;
    let mut out = Vec::new();
    for _ in 0..u16_at(eocd + 10) {
        assert_eq!(u32_at(at), 0x0201_4b50);
        let (nlen, xlen, clen) = (u16_at(at + 28) as usize, u16_at(at + 30), u16_at(at + 32));
        let name = String::from_utf8(zip[at + 46..at + 46 + nlen].to_vec()).expect("utf8");
        let local = u32_at(at + 42) as usize;
        out.push(RawEntry {
            name,
            made_by: u16_at(at + 4),
            method: u16_at(at + 10),
            flags: u16_at(at + 8),
            attr: u32_at(at + 38),
            extra_len: u16_at(local + 28),
        });
        at += 46 + nlen + xlen as usize + clen as usize;
    }
    out
}

#[test]
fn zip_layout_matches_python_stream_dir() {
    let pdd = sample_pdd();
    let mut tmp = tempfile::tempfile().expect("tmp");
    let mut last = 0;
    let size = zip_dir(pdd.path(), &mut tmp, &mut |n| last = n).expect("zip");
    assert_eq!(last, 13 + 10 + 19 + 18, "progress counts file bytes");
    let mut zip = Vec::new();
    tmp.seek(SeekFrom::Start(0)).expect("seek");
    tmp.read_to_end(&mut zip).expect("read");
    assert_eq!(zip.len() as u64, size);
    let entries = central_entries(&zip);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "empty/",
            "env/",
            "env/extravars",
            "inventory/",
            "inventory/hosts",
            "old",
            "project/",
            "project/test.yml",
            "sub/",
            "sub/deep/",
            "sub/deep/x.sh",
            "sub/link",
            "toplink",
        ]
    );
    for e in &entries {
        assert_eq!(e.made_by, 0x0314, "{}", e.name);
        assert_eq!(e.flags & 0x08, 0, "no data descriptor for {}", e.name);
        assert_eq!(e.extra_len, 0, "no extra fields for {}", e.name);
        let want = match e.name.as_str() {
            n if n.ends_with('/') => (0, 0x41ED_0010),
            "sub/deep/x.sh" => (8, 0x81ED_0000),
            "sub/link" | "toplink" => (0, 0xA1FF_0000),
            _ => (8, 0x81A4_0000),
        };
        assert_eq!((e.method, e.attr), want, "{}", e.name);
    }
    check_archive_contents(zip);
}

fn check_archive_contents(zip: Vec<u8>) {
    let mut archive = ZipArchive::new(std::io::Cursor::new(zip)).expect("archive");
    let old = archive.by_name("old").expect("old").last_modified().expect("time");
    assert_eq!((old.year(), old.month(), old.day(), old.hour()), (1980, 1, 1, 0));
    let mut target = String::new();
    archive.by_name("sub/link").expect("link").read_to_string(&mut target).expect("read");
    assert_eq!(target, "../project/test.yml");
}

#[test]
fn zip_is_reproducible() {
    let pdd = sample_pdd();
    let mut a = tempfile::tempfile().expect("tmp");
    let mut b = tempfile::tempfile().expect("tmp");
    let sa = zip_dir(pdd.path(), &mut a, &mut |_| {}).expect("zip");
    let sb = zip_dir(pdd.path(), &mut b, &mut |_| {}).expect("zip");
    assert_eq!(sa, sb);
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    a.seek(SeekFrom::Start(0)).expect("seek");
    b.seek(SeekFrom::Start(0)).expect("seek");
    a.read_to_end(&mut va).expect("read");
    b.read_to_end(&mut vb).expect("read");
    assert_eq!(va, vb);
}

#[test]
fn transmit_stream_bytes() {
    let mut kwargs = Map::new();
    kwargs.insert("ident".into(), Value::from("job42"));
    kwargs.insert("binary".into(), Value::Null);
    kwargs.insert("playbook".into(), Value::from("test.yml"));
    kwargs.insert("forks".into(), Value::from("3"));
    let mut out = Vec::new();
    let mut zip: &[u8] = b"PK\x03\x04abcdef";
    write_transmit(&mut out, &kwargs, Some((&mut zip, 10))).expect("write");
    let want = concat!(
        "{\"kwargs\": {\"ident\": \"job42\", \"binary\": null, \"playbook\": \"test.yml\", ",
        "\"forks\": \"3\"}}\n{\"zipfile\": 10}\nUEsDBGFiY2RlZg=={\"eof\": true}\n"
    );
    assert_eq!(String::from_utf8(out).expect("ascii"), want);

    let mut out = Vec::new();
    write_transmit(&mut out, &Map::new(), None).expect("write");
    assert_eq!(out, b"{\"kwargs\": {}}\n{\"eof\": true}\n");
}

#[test]
fn zip_section_streams_in_three_byte_multiples() {
    let data: Vec<u8> = (0..(B64_READ * 2 + 7)).map(|i| (i % 253) as u8).collect();
    let mut out = Vec::new();
    write_zip_section(&mut out, &mut data.as_slice(), data.len() as u64).expect("write");
    let header = format!("{{\"zipfile\": {}}}\n", data.len());
    assert!(out.starts_with(header.as_bytes()));
    assert_eq!(&out[header.len()..], STANDARD.encode(&data).as_bytes());
}

#[test]
fn short_zip_source_is_an_error() {
    let mut out = Vec::new();
    let err = write_zip_section(&mut out, &mut &b"abc"[..], 10).expect_err("short");
    assert!(matches!(err, PackError::ShortZip { expected: 10, got: 3 }));
}
