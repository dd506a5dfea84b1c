//! Targets on the link: the frame decoder and the mesh handshake.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::Limits;
use crate::mesh::driver::Event;
use crate::mesh::link::{self, LinkCtx, LinkError};
use crate::mesh::router::Router;
use crate::mesh::state::{Mesh, MeshConfig};
use crate::transport::BoxedIo;
use crate::transport::tls::PeerIdentity;
use crate::wire::{Frame, FrameCodec, Hello, MAX_FRAME, NodeId, PREFACE, PROTOCOL_VERSION, caps};

/// `Frame::decode` on the input as one body, then `FrameCodec` on it as a byte stream.
/// Every frame decoded must re-encode to a frame that decodes to the same encoding.
pub fn frame(data: &[u8]) {
    if let Ok(f) = Frame::decode(Bytes::copy_from_slice(data)) {
        round_trip(&f);
    }
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(data);
    // Each decoded frame consumes at least 5 bytes, so this ends.
    while let Ok(Some(f)) = codec.decode(&mut buf) {
        assert!(codec.last_len() >= 5 && codec.last_len() <= MAX_FRAME + 4);
        round_trip(&f);
    }
}

/// The encoder's output for a decoded frame is accepted by the decoder, unchanged.
fn round_trip(f: &Frame) {
    let enc = f.encode();
    assert!(enc.len() - 4 <= MAX_FRAME, "a decoded {} re-encodes over MAX_FRAME", f.kind());
    if let Frame::Lsa(lsa) = f {
        assert_eq!(lsa.encoded_len(), enc.len(), "Lsa::encoded_len disagrees with encode");
    }
    let mut buf = BytesMut::from(&enc[..]);
    let again = FrameCodec::default().decode(&mut buf);
    let again = match again {
        Ok(Some(g)) => g,
        other => panic!("re-encoded {} does not decode: {other:?}", f.kind()),
    };
    assert!(buf.is_empty());
    assert_eq!(again.encode(), enc, "re-encoded {} changes on a second round trip", f.kind());
}

const ME: &str = "fuzz-me";

struct Shared {
    router: Arc<Router>,
    limits: Arc<Limits>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let limits = Limits { handshake_timeout: Duration::from_secs(5), ..Limits::default() };
        let me = NodeId::new(ME).expect("valid id");
        let router = Router::new(me, 64 * 1024, crate::wire::DEFAULT_HOPS, &limits, TaskTracker::new());
        Shared { router, limits: Arc::new(limits) }
    })
}

/// The real `mesh::link::handshake` against a peer that sends the input (after one byte of
/// options) and then closes; admission is decided by a real [`Mesh`]. Checks that the
/// handshake ends, admits only a valid peer, and that every byte this node sent decodes.
pub fn handshake(data: &[u8]) {
    let Some((&opts, peer_bytes)) = data.split_first() else { return };
    let s = shared();
    let me = NodeId::new(ME).expect("valid id");
    let hello = Hello {
        version: PROTOCOL_VERSION,
        node_id: me.clone(),
        epoch: 1,
        caps: caps::STREAMS,
        idle_timeout_ms: 30_000,
        cost: 1.0,
    };
    let allowed = if opts & 1 != 0 { vec![NodeId::new("a").expect("valid id")] } else { Vec::new() };
    let identity = (opts & 2 != 0).then(|| PeerIdentity {
        node_ids: vec!["a".into()],
        fingerprint: [0; 32],
        certified: true,
    });
    let dialed_by_me = opts & 4 != 0;
    let (events, mut driver) = mpsc::channel(4);
    let ctx = LinkCtx {
        allowed_peers: Arc::new(allowed),
        router: s.router.clone(),
        events,
        hello: hello.clone(),
        cancel: CancellationToken::new(),
        limits: s.limits.clone(),
        origins: crate::mesh::origin::OriginCheck::TrustedNetwork,
        relays: Arc::new(crate::mesh::relay::RelayPolicy::any()),
        adverts_in_flight: Arc::new(tokio::sync::Semaphore::new(link::ADVERTS_IN_FLIGHT)),
        carrier: None,
    };
    let (ours, mut theirs) = tokio::io::duplex(peer_bytes.len() + 64 * 1024);
    super::runtime().block_on(async {
        theirs.write_all(peer_bytes).await.expect("duplex has room");
        theirs.shutdown().await.expect("shutdown");
        let mut mesh = Mesh::new(me.clone(), 1, false, MeshConfig::default(), Instant::now());
        let admit = async {
            // The driver's part: a real Mesh decides.
            if let Some(Event::Admit { link, hello, cost, dialed_by_me, not_relay, reply }) =
                driver.recv().await
            {
                let _ = reply.send(mesh.admit(link, &hello, cost, dialed_by_me, not_relay));
            }
        };
        let mut seen = None;
        let io: BoxedIo = Box::new(ours);
        let run = async {
            let r =
                link::handshake(&ctx, 7, io, 1.0, opts & 8 == 0, dialed_by_me, &mut seen, identity.as_ref())
                    .await;
            // Closes the driver's channel, so `admit` ends when no admission was asked.
            drop(ctx);
            r
        };
        let (result, ()) = tokio::join!(run, admit);
        // The peer closed its side: nothing may wait for the handshake timeout.
        assert!(!matches!(result, Err(LinkError::HandshakeTimeout)), "handshake waited on a closed peer");
        if let Ok(est) = &result {
            assert_eq!(est.peer.version, PROTOCOL_VERSION);
            assert_ne!(est.peer.node_id, me, "admitted a peer using this node's id");
            assert_eq!(seen.as_ref(), Some(&est.peer.node_id));
        }
        drop(result);
        // Everything this node sent: the preface, then frames the peer must be able to decode.
        let mut sent = Vec::new();
        theirs.read_to_end(&mut sent).await.expect("read what we sent");
        assert_eq!(sent.get(..4), Some(&PREFACE[..]));
        let mut buf = BytesMut::from(&sent[4..]);
        let mut codec = FrameCodec::default();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("this node sent an undecodable frame: {e}"),
            }
        }
        assert!(buf.is_empty(), "this node sent a partial frame");
    });
}
