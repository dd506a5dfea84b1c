//! Unit tests of `mesh::stream`: the frame rules a stream end enforces, and half-closes.

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
/// delivered locally): (opener's writer, opener's reader, acceptor's writer, acceptor's
/// reader).
fn protected_loop() -> (StreamWriter, StreamReader, StreamWriter, StreamReader) {
    use super::super::seal::{IV_LEN, KEY_LEN, Sealer, Unsealer};
    let limits = crate::limits::Limits::default();
    let me = NodeId::new("me").expect("id");
    let router = Router::new(me.clone(), 64 * 1024, crate::wire::DEFAULT_HOPS, &limits, Default::default());
    let keys = |n: u8| ([n; KEY_LEN], [n; IV_LEN]);
    let ((ok, oiv), (ak, aiv)) = (keys(1), keys(2));
    let end = |local: Side, seal: Sealer, unseal: Unsealer| {
        let key = StreamKey { peer: me.clone(), id: 7, local };
        let (rx, credit) = router.streams.register(key.clone(), 64 * 1024, 64 * 1024);
        let writer = StreamWriter {
            key: key.clone(),
            router: router.clone(),
            credit,
            offset: 0,
            done: false,
            seal: Some(Box::new(seal)),
        };
        let reader = StreamReader {
            key,
            router: router.clone(),
            rx,
            window: 64 * 1024,
            unacked: 0,
            ended: false,
            unseal: Some(Box::new(unseal)),
        };
        (writer, reader)
    };
    let (ow, or) = end(Side::Opener, Sealer::new(&ok, &oiv), Unsealer::new(&ak, &aiv));
    let (aw, ar) = end(Side::Acceptor, Sealer::new(&ak, &aiv), Unsealer::new(&ok, &oiv));
    (ow, or, aw, ar)
}

#[tokio::test]
async fn a_protected_end_finished_after_the_remote_stopped_reading_still_receives() {
    let (ow, mut or, mut aw, ar) = protected_loop();
    // The acceptor stops reading (its reader goes first, as a service's that answered).
    let stopped = ow.credit.clone();
    drop(ar);
    for _ in 0..500 {
        if stopped.closed_reason().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(stopped.stopped.load(Ordering::Acquire), "the Stop arrived");
    // The opener then ends its own direction: a half-close, not a reset of both.
    ow.finish(Bytes::new()).await;
    aw.write(Bytes::from_static(b"the rest")).await.expect("the acceptor still sends");
    aw.finish(Bytes::new()).await;
    assert!(matches!(or.recv().await, Ok(Chunk::Data(d)) if &d[..] == b"the rest"));
    assert!(matches!(or.recv().await, Ok(Chunk::End(_))));
}
