//! Ping and traceroute over the netceptor plane, as Go Receptor's: a datagram to a node's
//! `ping` service, and probes with growing hop counts that expire on the way.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::NetceptorNode;
use super::driver::Cmd;
use super::proto::data::SendError;

impl NetceptorNode {
    /// Pings `node` (its `ping` service answers with an empty datagram); the round trip.
    pub async fn ping(&self, node: &str, within: Duration) -> Result<Duration, PingError> {
        let service = super::proto::random_name();
        let mut rx = self.bind(&service, 4).await;
        let started = Instant::now();
        let r = async {
            self.send_to(&service, node, "ping", Bytes::new()).await.map_err(PingError::Send)?;
            loop {
                match tokio::time::timeout_at(started + within, rx.recv()).await {
                    Err(_) | Ok(None) => return Err(PingError::Timeout(within)),
                    Ok(Some(d)) if d.from_service == "unreach" => {
                        let why = super::wire::decode_unreachable(&d.payload)
                            .map(|m| m.problem)
                            .unwrap_or_default();
                        return Err(PingError::Unreachable(why));
                    }
                    Ok(Some(d)) if d.from_node == node => return Ok(started.elapsed()),
                    Ok(Some(_)) => {}
                }
            }
        }
        .await;
        self.unbind(&service).await;
        r
    }

    /// Go's traceroute: pings starting with 0, 1, … hops; each hop is the node that
    /// reported the probe expired, the last the target's answer. Ends at the target, at
    /// the first probe with no answer within `within`, or after 30 hops.
    pub async fn traceroute(
        &self,
        node: &str,
        within: Duration,
    ) -> Vec<(u8, Result<(String, Duration), PingError>)> {
        let service = super::proto::random_name();
        let mut rx = self.bind(&service, 4).await;
        let mut out = Vec::new();
        for hops in 0..super::wire::MAX_HOPS {
            let started = Instant::now();
            let (reply, sent) = oneshot::channel();
            let cmd = Cmd::Probe { from: service.clone(), node: node.to_owned(), hops, reply };
            let sent = match self.cmds().send(cmd).await {
                Ok(()) => sent.await.unwrap_or_else(|_| Err(SendError::NoRoute(node.to_owned()))),
                Err(_) => Err(SendError::NoRoute(node.to_owned())),
            };
            if let Err(e) = sent {
                out.push((hops, Err(PingError::Send(e))));
                break;
            }
            let r = loop {
                match tokio::time::timeout_at(started + within, rx.recv()).await {
                    Err(_) | Ok(None) => break Err(PingError::Timeout(within)),
                    Ok(Some(d)) if d.from_service == "unreach" => {
                        match super::wire::decode_unreachable(&d.payload) {
                            Ok(m) if m.problem == super::proto::data::EXPIRED => {
                                break Ok((d.from_node, started.elapsed()));
                            }
                            Ok(m) => break Err(PingError::Unreachable(m.problem)),
                            Err(_) => {}
                        }
                    }
                    Ok(Some(d)) if d.from_node == node && d.from_service == "ping" => {
                        break Ok((d.from_node, started.elapsed()));
                    }
                    Ok(Some(_)) => {}
                }
            };
            let done = !matches!(&r, Ok((from, _)) if from != node);
            out.push((hops, r));
            if done {
                break;
            }
        }
        self.unbind(&service).await;
        out
    }
}

/// Why a netceptor ping failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error(transparent)]
    Send(SendError),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
}
