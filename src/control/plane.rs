//! Work units on Go Receptor nodes (receptord as the controller, Go as the executor): a
//! [`RemoteControl`] that reaches a node's control service over a netceptor stream (QUIC;
//! user TLS with this node's `[tls]` when the node advertises it with ConnType 2, as Go's
//! `control-service tls=` does, or always for a unit submitted with `tlsclient`; Go's
//! insecure mode otherwise) when only the netceptor plane knows the node, and the native
//! mesh otherwise (for `tlsclient` units only over end-to-end protected streams). Each
//! request is its own stream, as Go's `remote_work.go` does it; the
//! requests are Go's (`work submit` JSON with string values, `work status`, `results`
//! with `startpos`, `cancel`, `release`), so the Go node sees an ordinary remote unit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::client::{ClientError, ControlClient, unit_requests};
use super::io::{ByteWrite, IoRead, LineReader};
use crate::netceptor::NetceptorNode;
use crate::netceptor::quic::dial::{DialSession, DialWrite};
use crate::wire::NodeId;
use crate::work::remote::{BoxFut, RemoteBytes, RemoteControl, RemoteError, RemoteOp, RemoteSubmit};
use crate::work::units::UnitStatus;

/// How long a Go node has to greet us (Go's remote work waits 5 s).
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

type NetClient = ControlClient<IoRead<quinn::RecvStream>, DialWrite>;

/// Remote units on native nodes through `mesh`, on Go nodes through `net`.
pub struct PlaneControl {
    pub mesh: Arc<dyn RemoteControl>,
    pub net: NetceptorNode,
    /// Every stream authenticated with `[tls]` (a unit submitted with `tlsclient`): Go
    /// nodes dialed with user TLS whatever they advertise, native ones only over
    /// end-to-end protected streams.
    pub user_tls: bool,
}

fn unreachable(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Unreachable(e.to_string())
}

fn classify(e: ClientError) -> RemoteError {
    match e {
        ClientError::Remote(msg) => RemoteError::from_reply(msg),
        ClientError::Protocol(msg) => RemoteError::Refused(format!("could not parse response: {msg}")),
        ClientError::Io(e) => unreachable(e),
    }
}

impl PlaneControl {
    /// The native plane wins for every node it can route to.
    fn native(&self, node: &NodeId) -> bool {
        self.mesh.reachable(node) || !self.net.routable(node.as_str())
    }

    /// The native plane for `node`, held to this view's promise.
    fn mesh_for(&self, node: &NodeId) -> Result<Arc<dyn RemoteControl>, RemoteError> {
        if !self.user_tls {
            return Ok(self.mesh.clone());
        }
        match self.mesh.clone().user_tls(node) {
            Ok(mesh) => Ok(mesh),
            // Nowhere to go now: nothing was sent unprotected; try again later.
            Err(_) if !self.mesh.reachable(node) => Err(unreachable(format!("node {node} is not reachable"))),
            Err(e) => Err(e),
        }
    }

    async fn session(&self, node: &NodeId) -> Result<NetClient, RemoteError> {
        Ok(self.session_authenticated(node).await?.0)
    }

    /// A session, and whether the server proved its node ID (user TLS).
    async fn session_authenticated(&self, node: &NodeId) -> Result<(NetClient, bool), RemoteError> {
        use crate::netceptor::quic::dial::DialError;
        let dialed = if self.user_tls {
            self.net.dial_user_tls(node.as_str(), super::CONTROL_SERVICE).await
        } else {
            self.net.dial(node.as_str(), super::CONTROL_SERVICE).await
        };
        let d = match dialed {
            Ok(d) => d,
            // Certificates and configuration do not fix themselves on a retry.
            Err(
                e @ (DialError::Tls { .. }
                | DialError::NeedsTls { .. }
                | DialError::NotServedWithTls { .. }
                | DialError::Config(_)),
            ) => {
                return Err(RemoteError::Refused(e.to_string()));
            }
            Err(e) => return Err(unreachable(e)),
        };
        let authenticated = d.authenticated;
        let wr = DialWrite { send: d.send, session: d.session };
        let client = tokio::time::timeout(GREETING_TIMEOUT, ControlClient::connect(IoRead(d.recv), wr))
            .await
            .map_err(|_| unreachable(format!("no greeting from {node} within {GREETING_TIMEOUT:?}")))?
            .map_err(classify)?;
        // As Go: the greeting must name the node dialed.
        if client.node != node.as_str() {
            return Err(RemoteError::Refused(format!("expected node {node}, reached {}", client.node)));
        }
        Ok((client, authenticated))
    }

    async fn request(&self, node: &NodeId, line: &str) -> Result<Value, RemoteError> {
        let mut c = self.session(node).await?;
        let v = c.request(line).await.map_err(classify)?;
        c.wr_mut().close().await;
        Ok(v)
    }
}

/// A results stream from a Go node: raw bytes until it closes its side.
struct NetResults(LineReader<IoRead<quinn::RecvStream>>, #[allow(dead_code)] Arc<DialSession>);

impl RemoteBytes for NetResults {
    fn next(&mut self) -> BoxFut<'_, Result<Option<Bytes>, RemoteError>> {
        Box::pin(async move { self.0.raw().await.map_err(unreachable) })
    }
}

impl RemoteControl for PlaneControl {
    fn reachable(&self, node: &NodeId) -> bool {
        self.mesh.reachable(node) || self.net.routable(node.as_str())
    }

    fn links_are_tls(&self) -> bool {
        self.mesh.links_are_tls()
    }

    fn user_tls(self: Arc<Self>, node: &NodeId) -> Result<Arc<dyn RemoteControl>, RemoteError> {
        if self.net.user_tls().is_none() {
            return Err(RemoteError::Refused(super::client::NO_TLS.into()));
        }
        // A node the native plane reaches now must get protected streams there: refused
        // at once rather than at the first request.
        if self.mesh.reachable(node) {
            self.mesh.clone().user_tls(node)?;
        }
        Ok(Arc::new(PlaneControl { mesh: self.mesh.clone(), net: self.net.clone(), user_tls: true }))
    }

    fn path<'a>(&'a self, node: &'a NodeId) -> BoxFut<'a, String> {
        self.mesh.path(node)
    }

    fn route_mark(&self) -> Option<crate::mesh::reroute::RouteMark> {
        self.mesh.route_mark()
    }

    fn rerouted_since(&self, node: &NodeId, mark: Option<crate::mesh::reroute::RouteMark>) -> bool {
        self.mesh.rerouted_since(node, mark)
    }

    fn submit<'a>(
        &'a self,
        node: &'a NodeId,
        req: RemoteSubmit,
        on_created: &'a (dyn Fn(&str) + Send + Sync),
    ) -> BoxFut<'a, Result<String, RemoteError>> {
        if self.native(node) {
            return Box::pin(async move {
                let mesh = self.mesh_for(node)?;
                mesh.submit(node, req, on_created).await
            });
        }
        Box::pin(async move {
            let (mut c, authenticated) = self.session_authenticated(node).await?;
            // A stream in Go's insecure mode authenticates no server: no secrets over it.
            if !authenticated && req.params.keys().any(|k| k.starts_with("secret_")) {
                return Err(RemoteError::Refused(format!(
                    "secret_ parameters are not sent to {node}: its control service is not served with TLS \
                     (ConnType 1), so nothing proves who receives them"
                )));
            }
            unit_requests::submit(&mut c, node, req, false, on_created, classify).await
        })
    }

    fn status<'a>(&'a self, node: &'a NodeId, unit: &'a str) -> BoxFut<'a, Result<UnitStatus, RemoteError>> {
        if self.native(node) {
            return Box::pin(async move {
                let mesh = self.mesh_for(node)?;
                mesh.status(node, unit).await
            });
        }
        Box::pin(async move {
            let v = self.request(node, &format!("work status {unit}")).await?;
            serde_json::from_value(v).map_err(|e| RemoteError::Refused(format!("bad status: {e}")))
        })
    }

    fn results<'a>(
        &'a self,
        node: &'a NodeId,
        unit: &'a str,
        from: u64,
        signature: Option<String>,
    ) -> BoxFut<'a, Result<Box<dyn RemoteBytes>, RemoteError>> {
        if self.native(node) {
            return Box::pin(async move {
                let mesh = self.mesh_for(node)?;
                mesh.results(node, unit, from, signature).await
            });
        }
        Box::pin(async move {
            let mut c = self.session(node).await?;
            unit_requests::start_results(&mut c, unit, from, signature, classify).await?;
            c.wr_mut().close().await;
            let session = c.wr_mut().session.clone();
            Ok(Box::new(NetResults(c.into_reader(), session)) as Box<dyn RemoteBytes>)
        })
    }

    fn operate<'a>(
        &'a self,
        node: &'a NodeId,
        unit: &'a str,
        op: RemoteOp,
        signature: Option<String>,
    ) -> BoxFut<'a, Result<(), RemoteError>> {
        if self.native(node) {
            return Box::pin(async move {
                let mesh = self.mesh_for(node)?;
                mesh.operate(node, unit, op, signature).await
            });
        }
        Box::pin(async move {
            self.request(node, &unit_requests::operate_line(unit, op, signature)).await?;
            Ok(())
        })
    }
}
