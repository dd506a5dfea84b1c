//! A fake netceptor peer on a raw TCP connection, for hostile tests of receptord's
//! netceptor plane: it frames whatever packets a test builds (with the library's own
//! encoders, or raw bytes), and reports what receptord sent back.

use std::io::{Read, Write};
use std::time::Duration;

use receptord::netceptor::names::name_hash;
use receptord::netceptor::wire::{DataPacket, Packet};

pub struct FakeGo(pub std::net::TcpStream);

impl FakeGo {
    pub fn connect(port: u16) -> FakeGo {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        FakeGo(s)
    }

    /// Sends one packet, framed (an empty one frames as a zero length).
    pub fn send(&mut self, packet: &[u8]) {
        let mut f = (packet.len() as u16).to_le_bytes().to_vec();
        f.extend_from_slice(packet);
        self.0.write_all(&f).expect("write");
    }

    /// Like `send`, false once the connection is gone.
    pub fn try_send(&mut self, packet: &[u8]) -> bool {
        let mut f = (packet.len() as u16).to_le_bytes().to_vec();
        f.extend_from_slice(packet);
        self.0.write_all(&f).is_ok()
    }

    /// A routing update from `node` as forwarded by `forwarder`.
    pub fn update_packet(node: &str, forwarder: &str, seq: u64, conns: &str) -> Vec<u8> {
        let body = format!(
            r#"{{"NodeID":"{node}","UpdateID":"u{seq}x{node}","UpdateEpoch":{},"UpdateSequence":{seq},"Connections":{{{conns}}},"ForwardingNode":"{forwarder}","SuspectedDuplicate":0}}"#,
            1u64 << 50
        );
        let mut p = vec![1u8];
        p.extend_from_slice(body.as_bytes());
        p
    }

    pub fn update(&mut self, node: &str, forwarder: &str, seq: u64, conns: &str) {
        self.send(&Self::update_packet(node, forwarder, seq, conns));
    }

    /// A control-service advertisement from `node` listing `work_type`.
    pub fn ad(&mut self, node: &str, work_type: &str) {
        let body = format!(
            r#"{{"NodeID":"{node}","Service":"control","Time":"2099-01-01T00:00:00Z","ConnType":1,"Tags":{{"type":"Control Service"}},"WorkCommands":[{{"WorkType":"{work_type}","Secure":false}}],"Cancel":false}}"#
        );
        let mut p = vec![2u8];
        p.extend_from_slice(body.as_bytes());
        self.send(&p);
    }

    /// A ping from `from:svc` to `to`.
    pub fn ping_packet(from: &str, svc: &str, to: &str) -> Vec<u8> {
        let d = DataPacket {
            hops: 29,
            from_hash: name_hash(from),
            to_hash: name_hash(to),
            from_service: svc.into(),
            to_service: "ping".into(),
            payload: bytes::Bytes::new(),
        };
        Packet::Data(d).encode().expect("encodes").to_vec()
    }

    /// Links as `id` with receptord (`me`): its first update, then one listing `me`.
    pub fn link_as(port: u16, id: &str, me: &str) -> FakeGo {
        let mut f = FakeGo::connect(port);
        f.update(id, id, 1, "");
        f.update(id, id, 2, &format!(r#""{me}":1"#));
        f
    }

    /// The type bytes of the packets received until the connection closes.
    pub fn types_until_closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the connection was not closed: {e}"),
            }
        }
        let mut types = Vec::new();
        let mut i = 0;
        while i + 2 < all.len() {
            let len = usize::from(u16::from_le_bytes([all[i], all[i + 1]]));
            types.push(all[i + 2]);
            i += 2 + len;
        }
        types
    }
}
