//! Unit tests of `mesh::stream`: the frame rules a stream end enforces, and half-closes.

use std::time::Duration;

use super::*;

fn table_with_stream() -> (StreamTable, NodeId, mpsc::UnboundedReceiver<Inbound>) {
    let table = StreamTable::default();
    let peer = NodeId::new("peer").expect("id");
    let key = StreamKey { peer: peer.clone(), id: 1, local: Side::Acceptor };
    let (rx, _credit) = table.register(key, 1024, 0);
    (table, peer, rx)
}

#[test]
fn fin_after_fin_is_a_protocol_error_charged_to_the_sender() {
    let (table, peer, mut rx) = table_with_stream();
    let fin = || Body::Fin { stream: 1, from: Side::Opener, trailer: Bytes::from_static(b"t") };
    assert_eq!(table.deliver(&peer, fin()), None);
    let reset = table.deliver(&peer, fin());
    assert!(matches!(reset, Some(Body::Reset { ref reason, .. }) if reason.contains("after end of stream")));
    assert!(matches!(rx.try_recv(), Ok(Inbound::Fin(_))));
    assert!(matches!(rx.try_recv(), Ok(Inbound::Violation { replayed: true, .. })));
    assert!(rx.try_recv().is_err(), "nothing more is queued");
}

#[test]
fn empty_data_and_data_beyond_the_window_reset_the_stream() {
    let (table, peer, _rx) = table_with_stream();
    let data =
        |offset, n| Body::Data { stream: 1, from: Side::Opener, offset, data: Bytes::from(vec![0; n]) };
    assert!(matches!(table.deliver(&peer, data(0, 0)), Some(Body::Reset { .. })));
    let (table, peer, _rx) = table_with_stream();
    assert_eq!(table.deliver(&peer, data(0, 1024)), None);
    assert!(matches!(table.deliver(&peer, data(1024, 1)), Some(Body::Reset { .. })));
}

/// Both ends of one protected stream a router opens to itself (frames to `me` are
/// delivered locally): (router, opener's writer, opener's reader, acceptor's writer,
/// acceptor's reader).
fn protected_loop() -> (Arc<Router>, StreamWriter, StreamReader, StreamWriter, StreamReader) {
    use super::super::seal::{IV_LEN, KEY_LEN, Sealer, Unsealer};
    let limits = crate::limits::Limits::default();
    let me = NodeId::new("me").expect("id");
    let router = Router::new(me.clone(), 64 * 1024, crate::wire::DEFAULT_HOPS, &limits, Default::default());
    let keys = |n: u8| ([n; KEY_LEN], [n; IV_LEN]);
    let ((ok, oiv), (ak, aiv)) = (keys(1), keys(2));
    let end = |local: Side, seal: Sealer, unseal: Unsealer| {
        let (mut writer, mut reader) =
            router.endpoints(StreamKey { peer: me.clone(), id: 7, local }, 64 * 1024);
        writer.protect(seal);
        reader.protect(unseal);
        (writer, reader)
    };
    let (ow, or) = end(Side::Opener, Sealer::new(&ok, &oiv), Unsealer::new(&ak, &aiv));
    let (aw, ar) = end(Side::Acceptor, Sealer::new(&ak, &aiv), Unsealer::new(&ok, &oiv));
    (router, ow, or, aw, ar)
}

/// Waits (bounded) until `credit` was closed by a `Stop`.
async fn wait_stopped(credit: &Credit) {
    for _ in 0..500 {
        if credit.closed_reason().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(credit.stopped.load(Ordering::Acquire), "the Stop arrived");
}

/// A step of a test that must not hang.
async fn soon<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("within 10 s")
}

#[tokio::test]
async fn a_protected_end_finished_after_the_remote_stopped_reading_still_receives() {
    let (router, ow, mut or, mut aw, ar) = protected_loop();
    // The acceptor stops reading (its reader goes first, as a service's that answered).
    let stopped = ow.credit.clone();
    drop(ar);
    wait_stopped(&stopped).await;
    // The opener then ends its own direction: a half-close, not a reset of both.
    soon(ow.finish(Bytes::new())).await;
    soon(aw.write(Bytes::from_static(b"the rest"))).await.expect("the acceptor still sends");
    soon(aw.finish(Bytes::new())).await;
    assert!(matches!(soon(or.recv()).await, Ok(Chunk::Data(d)) if &d[..] == b"the rest"));
    assert!(matches!(soon(or.recv()).await, Ok(Chunk::End(_))));
    assert_eq!(router.streams.open_with(&router.me), 0, "both ends are gone");
}

#[tokio::test]
async fn a_forged_stop_cannot_make_a_protected_direction_end_cleanly() {
    let (router, ow, _or, _aw, mut ar) = protected_loop();
    // A relay forges the acceptor's Stop; the acceptor is in fact still reading.
    let stop = Body::Stop { stream: 7, from: Side::Acceptor };
    assert_eq!(router.streams.deliver(&router.me, stop), None);
    wait_stopped(&ow.credit).await;
    soon(ow.finish(Bytes::new())).await;
    // The plain Fin carries no sealed end record: the acceptor's reader gets a gap, never
    // a clean end of input.
    assert!(matches!(soon(ar.recv()).await, Err(StreamError::Sequence(_))));
}
