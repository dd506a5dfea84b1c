//! Unit tests for the stream decoder, using hand-made byte fixtures shaped like real
//! `ansible-runner transmit`/`worker` output.

use super::*;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

/// Decodes `input` fed in `step`-byte pieces; zip chunks are merged into one `ZipData`.
fn decode_all(input: &[u8], step: usize, limits: DecodeLimits) -> Result<Vec<Item>, DecodeError> {
    let mut d = StreamDecoder::new(limits);
    let mut items: Vec<Item> = Vec::new();
    for piece in input.chunks(step.max(1)) {
        d.feed(piece);
        while let Some(item) = d.next_item()? {
            match (items.last_mut(), item) {
                (Some(Item::ZipData(prev)), Item::ZipData(more)) => {
                    let mut joined = prev.to_vec();
                    joined.extend_from_slice(&more);
                    *prev = Bytes::from(joined);
                }
                (_, item) => items.push(item),
            }
        }
    }
    d.finish()?;
    Ok(items)
}

fn transmit_fixture(zip: &[u8]) -> Vec<u8> {
    let mut s = b"{\"kwargs\": {\"ident\": \"job42\", \"playbook\": \"test.yml\"}}\n".to_vec();
    s.extend_from_slice(format!("{{\"zipfile\": {}}}\n", zip.len()).as_bytes());
    s.extend_from_slice(STANDARD.encode(zip).as_bytes());
    s.extend_from_slice(b"{\"eof\": true}\n");
    s
}

fn expect_transmit(items: &[Item], zip: &[u8]) {
    assert_eq!(items.len(), 5, "{items:?}");
    match &items[0] {
        Item::Line { raw, value } => {
            assert_eq!(&raw[..], b"{\"kwargs\": {\"ident\": \"job42\", \"playbook\": \"test.yml\"}}");
            assert_eq!(kind(value), LineKind::Kwargs);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(items[1], Item::ZipStart { size: zip.len() as u64 });
    assert_eq!(items[2], Item::ZipData(Bytes::copy_from_slice(zip)));
    assert_eq!(items[3], Item::ZipEnd);
    assert_eq!(items[4], Item::Eof);
}

#[test]
fn transmit_stream_any_split() {
    for len in [1usize, 2, 3, 4, 5, 100, 200_000] {
        let zip: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let input = transmit_fixture(&zip);
        for step in [1, 2, 3, 7, 4096, input.len()] {
            if len > 1000 && step < 7 {
                continue; // keep the 1-byte run on the small fixtures fast
            }
            let items = decode_all(&input, step, DecodeLimits::default()).expect("decodes");
            expect_transmit(&items, &zip);
        }
    }
}

#[test]
fn large_zip_comes_in_bounded_chunks() {
    let zip = vec![0xabu8; 300_000];
    let mut d = StreamDecoder::new(DecodeLimits::default());
    d.feed(&transmit_fixture(&zip));
    let mut total = 0;
    while let Some(item) = d.next_item().expect("decodes") {
        if let Item::ZipData(b) = item {
            assert!(b.len() <= B64_CHUNK / 4 * 3);
            total += b.len();
        }
    }
    assert_eq!(total, zip.len());
    assert!(d.is_done());
}

#[test]
fn wrapped_base64_is_accepted() {
    let zip: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let enc = STANDARD.encode(&zip);
    let mut input = format!("{{\"kwargs\": {{}}}}\n{{\"zipfile\": {}}}\n", zip.len()).into_bytes();
    for (i, c) in enc.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            input.extend_from_slice(b"\r\n \t");
        }
        input.extend_from_slice(c);
    }
    input.extend_from_slice(b"{\"eof\": true}\n");
    let items = decode_all(&input, 1, DecodeLimits::default()).expect("decodes");
    assert_eq!(items[2], Item::ZipData(Bytes::from(zip)));
}

#[test]
fn lf_after_base64_is_an_empty_line() {
    let mut input = transmit_fixture(b"abcd");
    let pos = input.windows(2).position(|w| w == b"={").expect("padding") + 1;
    input.insert(pos, b'\n');
    assert_eq!(decode_all(&input, 3, DecodeLimits::default()), Err(DecodeError::EmptyLine));
    assert_eq!(decode_all(b"\n", 1, DecodeLimits::default()), Err(DecodeError::EmptyLine));
    assert_eq!(decode_all(b" \r\n", 1, DecodeLimits::default()), Err(DecodeError::EmptyLine));
}

#[test]
fn invalid_json_reports_an_excerpt() {
    let err = decode_all(b"not json\n", 1, DecodeLimits::default()).expect_err("must fail");
    match err {
        DecodeError::Json { excerpt, .. } => assert_eq!(excerpt, "\"not json\""),
        other => panic!("unexpected {other:?}"),
    }
    let long = [b'x'; 1000];
    match decode_all(&[&long[..], b"\n"].concat(), 4096, DecodeLimits::default()) {
        Err(DecodeError::Json { excerpt, .. }) => assert!(excerpt.len() < 300),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn crlf_and_surrounding_space_are_fine() {
    let items = decode_all(b" {\"status\": \"running\"} \r\n{\"eof\": true}\n", 1, DecodeLimits::default())
        .expect("decodes");
    match &items[0] {
        Item::Line { raw, value } => {
            assert_eq!(&raw[..], b" {\"status\": \"running\"} \r");
            assert_eq!(value, &json!({"status": "running"}));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn limits_are_enforced() {
    let limits = DecodeLimits { max_line: 20, max_zip: 10, max_zips: 1 };
    let long = b"{\"status\": \"0123456789012345\"}\n";
    assert_eq!(decode_all(long, 1, limits), Err(DecodeError::LineTooLong { limit: 20 }));
    assert_eq!(decode_all(long, 4096, limits), Err(DecodeError::LineTooLong { limit: 20 }));
    // No LF at all: the buffer must not grow without bound.
    let mut d = StreamDecoder::new(limits);
    d.feed(&[b'x'; 21]);
    assert_eq!(d.next_item(), Err(DecodeError::LineTooLong { limit: 20 }));
    assert_eq!(
        decode_all(b"{\"zipfile\": 11}\n", 1, limits),
        Err(DecodeError::ZipTooLarge { size: 11, limit: 10 })
    );
    for bad in [&b"{\"zipfile\": -1}\n"[..], b"{\"zipfile\": 1.5}\n", b"{\"zipfile\": \"3\"}\n"] {
        assert!(matches!(decode_all(bad, 1, limits), Err(DecodeError::ZipHeader { .. })));
    }
    // One zip section per stream: a second one (each within max_zip) is refused.
    let two = b"{\"zipfile\": 3}\nYWJj{\"zipfile\": 3}\nYWJj{\"eof\": true}\n";
    assert_eq!(decode_all(two, 1, limits), Err(DecodeError::TooManyZips(1)));
    assert_eq!(decode_all(two, 4096, limits), Err(DecodeError::TooManyZips(1)));
}

#[test]
fn truncation_is_reported() {
    let full = transmit_fixture(b"hello world");
    let cases: [(usize, &str); 4] = [
        (10, "in the middle of a line"),
        (full.len() - 20, "inside a zip section"),
        (full.len() - 14, "before the eof line"),
        (0, "before the eof line"),
    ];
    for (cut, what) in cases {
        assert_eq!(
            decode_all(&full[..cut], 1, DecodeLimits::default()),
            Err(DecodeError::Truncated { what }),
            "cut at {cut}"
        );
    }
}

#[test]
fn bad_base64_and_wrong_length() {
    let input = b"{\"zipfile\": 3}\nab!d{\"eof\": true}\n";
    assert!(matches!(decode_all(input, 1, DecodeLimits::default()), Err(DecodeError::Base64 { .. })));
    // 4 chars announced for N=3, but the padding says 2 bytes.
    let input = b"{\"zipfile\": 3}\nYWI={\"eof\": true}\n";
    assert_eq!(
        decode_all(input, 2, DecodeLimits::default()),
        Err(DecodeError::ZipLength { expected: 3, got: 2 })
    );
    // Padding in the middle of the section, whatever the input's split (fuzzing found that
    // fed in 4-byte pieces the groups decoded one by one and the section was accepted).
    let input = b"{\"zipfile\": 6}\nYQ==YWJj{\"eof\": true}\n";
    for step in [1, 4, 19, 100] {
        assert!(matches!(decode_all(input, step, DecodeLimits::default()), Err(DecodeError::Base64 { .. })));
    }
}

#[test]
fn zero_length_zip_and_input_after_eof() {
    let input = b"{\"zipfile\": 0}\n{\"eof\": true}\ngarbage without newline";
    let items = decode_all(input, 1, DecodeLimits::default()).expect("decodes");
    assert_eq!(items, vec![Item::ZipStart { size: 0 }, Item::ZipEnd, Item::Eof]);
}

#[test]
fn worker_stream_with_keepalives() {
    let zip = b"PK\x05\x06 fake";
    let mut input = b"{\"event\": \"keepalive\", \"counter\": 0, \"uuid\": 0}\n".to_vec();
    input.extend_from_slice(b"{\"status\": \"starting\", \"runner_ident\": \"job42\"}\n");
    input.extend_from_slice(b"{\"uuid\": \"e8\", \"counter\": 1, \"stdout\": \"\", \"event\": \"x\"}\n");
    input.extend_from_slice(b"{\"status\": \"successful\", \"runner_ident\": \"job42\"}\n");
    input.extend_from_slice(format!("{{\"zipfile\": {}}}\n", zip.len()).as_bytes());
    input.extend_from_slice(STANDARD.encode(zip).as_bytes());
    input.extend_from_slice(b"{\"eof\": true}\n");
    let items = decode_all(&input, 1, DecodeLimits::default()).expect("decodes");
    let kinds: Vec<LineKind> = items
        .iter()
        .filter_map(|i| match i {
            Item::Line { value, .. } => Some(kind(value)),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [LineKind::Keepalive, LineKind::Status, LineKind::Event, LineKind::Status]);
    assert_eq!(items.len(), 8);
}

#[test]
fn classification_and_truthiness() {
    assert_eq!(kind(&json!({"counter": 1, "uuid": ""})), LineKind::Other);
    assert_eq!(kind(&json!({"counter": 0, "uuid": "u"})), LineKind::Other);
    assert_eq!(kind(&json!({"counter": 3, "uuid": "u"})), LineKind::Event);
    assert_eq!(kind(&json!([1, 2])), LineKind::Other);
    assert!(!truthy(&json!(0.0)));
    assert!(truthy(&json!([0])));
    assert!(!truthy(&json!({})));
}
