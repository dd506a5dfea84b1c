//! The TLS 1.3 configurations of end-to-end protected mesh streams (`mesh::e2e`), built
//! from the node's own material next to the link configurations in [`super::tls`]: the
//! same certificate, key and CAs, but TLS 1.3 only, a client certificate always required
//! (both ends prove their node IDs), and no SNI (node IDs are checked from the
//! certificates instead).
//!
//! Resumption (`limits.stream_resumption`, issue 26): an acceptor hands the opener one
//! TLS 1.3 session ticket after each handshake, but only to an opener that offered the
//! [`RESUME_ALPN`] protocol (which says it reads that ticket before the stream's sealed
//! records; older openers offer none and get none). The opener keeps tickets per
//! acceptor ([`server_name`]) and offers one on its next stream there: PSK with a fresh
//! ECDHE (rustls offers no other mode), no 0-RTT, the certificates of the full
//! handshake carried over and still checked against the node IDs. Tickets are sealed
//! with keys held only in this material ([`BoundedTickets`]): a reload of the TLS files
//! builds new ones, so every earlier ticket is refused and both ends do a full handshake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::{Resumption, Tls12Resumption, WebPkiServerVerifier};
use rustls::server::{NoServerSessionStorage, ProducesTickets, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The ALPN protocol an opener offers to say "send me a ticket, I read it before the
/// sealed records"; an acceptor that selects it sends one ([`crate::mesh`]'s e2e).
pub(crate) const RESUME_ALPN: &[u8] = b"receptord-e2e-resume/1";

/// The cipher suite an opener offers first (the acceptor follows the opener's order): its
/// SHA-256 key schedule runs on the CPU's SHA extensions where SHA-384's has none, and a
/// resumed stream handshake is mostly key schedule. The records of a protected stream are
/// AES-256-GCM either way: their keys are exported from the handshake (`mesh::seal`).
const PREFERRED_SUITE: rustls::CipherSuite = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;

/// The provider of stream handshakes: `base` with [`PREFERRED_SUITE`] first and every
/// other suite kept (older openers may prefer another; both ends still agree).
fn stream_provider(base: &rustls::crypto::CryptoProvider) -> rustls::crypto::CryptoProvider {
    let mut provider = base.clone();
    provider.cipher_suites.sort_by_key(|s| s.suite() != PREFERRED_SUITE);
    provider
}

/// Acceptors whose tickets an opener keeps (least recently used forgotten first).
const TICKET_CACHE_NODES: usize = 1024;

/// The name an opener's tickets for `node` are kept under (never sent: SNI is off). A
/// hash, so any node ID makes a valid DNS name; a collision would only offer a ticket
/// the other acceptor cannot open (and the node ID check after the handshake stays).
pub(crate) fn server_name(node: &str) -> ServerName<'static> {
    let digest = ring::digest::digest(&ring::digest::SHA256, node.as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    ServerName::try_from(format!("n{hex}.receptord")).unwrap_or_else(|_| {
        // Unreachable (hex is always a valid label); a constant name still works.
        ServerName::try_from("receptord-node").expect("constant name").to_owned()
    })
}

/// Session tickets good for at most `lifetime` after they were issued, checked by the
/// acceptor on the monotonic clock of this process (the opener forgets them by then too,
/// from the lifetime in the ticket). Sealed by rustls's ring ticketer (keys in memory,
/// rotated every 6 hours), the issue time prepended inside the sealed part.
pub(crate) struct BoundedTickets {
    inner: Arc<dyn ProducesTickets>,
    lifetime: Duration,
    epoch: Instant,
}

impl std::fmt::Debug for BoundedTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedTickets").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl BoundedTickets {
    pub(crate) fn new(lifetime: Duration) -> Result<BoundedTickets, rustls::Error> {
        Ok(BoundedTickets { inner: rustls::crypto::ring::Ticketer::new()?, lifetime, epoch: Instant::now() })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Moves this ticketer's clock `by` forward (tests of expiry, without waiting).
    #[cfg(test)]
    pub(crate) fn age_for_test(&mut self, by: Duration) {
        self.epoch = self.epoch.checked_sub(by).expect("machine up longer than the test's age");
    }
}

impl ProducesTickets for BoundedTickets {
    fn enabled(&self) -> bool {
        !self.lifetime.is_zero()
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.lifetime.as_secs()).unwrap_or(u32::MAX).max(1)
    }

    /// Stamped with when the certificates behind the session were proven: now after a
    /// full handshake, the resumed ticket's own stamp after a resumption (see
    /// [`proof_scope`]), so a chain of resumptions ends `lifetime` after its full handshake.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let proven = PROVEN.try_with(|c| c.get()).ok().flatten().unwrap_or_else(|| self.now());
        let mut stamped = proven.to_be_bytes().to_vec();
        stamped.extend_from_slice(plain);
        self.inner.encrypt(&stamped)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let stamped = self.inner.decrypt(cipher)?;
        let (at, plain) = stamped.split_at_checked(8)?;
        let proven = u64::from_be_bytes(at.try_into().ok()?);
        if self.now().saturating_sub(proven) > self.lifetime.as_secs() {
            // Too old: rustls falls back to a full handshake (certificates proven anew).
            return None;
        }
        let _ = PROVEN.try_with(|c| c.set(Some(proven)));
        Some(plain.to_vec())
    }
}

tokio::task_local! {
    /// The proof time of the ticket the handshake running in this task resumed.
    static PROVEN: std::cell::Cell<Option<u64>>;
}

/// Runs an acceptor's handshake (`mesh::e2e`) so that the tickets it issues inherit the
/// proof time of the ticket it resumed (rustls calls the ticketer synchronously within
/// the task's poll, so a task-local carries it from `decrypt` to `encrypt`).
pub(crate) async fn proof_scope<F: std::future::Future>(f: F) -> F::Output {
    PROVEN.scope(std::cell::Cell::new(None), f).await
}

use super::tls::{NodeVerifier, TlsError};

/// Both halves of the end-to-end stream handshake.
#[derive(Debug)]
pub(crate) struct StreamTls {
    /// Used by a stream's opener; verifies the acceptor's chain (its node ID is checked
    /// after the handshake).
    pub(crate) client: Arc<ClientConfig>,
    /// Used by a stream's acceptor; demands and verifies the opener's certificate.
    pub(crate) server: Arc<ServerConfig>,
}

pub(super) fn build(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    resumption: Duration,
) -> Result<StreamTls, TlsError> {
    let cfg = |e: rustls::Error| TlsError::Config(format!("end-to-end stream TLS: {e}"));
    let provider = Arc::new(stream_provider(&provider));
    let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(tls13)
        .map_err(cfg)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(cfg)?;
    let resume = !resumption.is_zero();
    server.send_tls13_tickets = usize::from(resume);
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.ticketer = Arc::new(BoundedTickets::new(resumption).map_err(cfg)?);
    if resume {
        server.alpn_protocols = vec![RESUME_ALPN.to_vec()];
    }
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(tls13)
        .map_err(cfg)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeVerifier { inner: server_verifier }))
        .with_client_auth_cert(chain, key.clone_key())
        .map_err(cfg)?;
    client.enable_sni = false;
    if resume {
        client.resumption =
            Resumption::in_memory_sessions(TICKET_CACHE_NODES).tls12_resumption(Tls12Resumption::Disabled);
        client.alpn_protocols = vec![RESUME_ALPN.to_vec()];
    } else {
        client.resumption = Resumption::disabled();
    }
    Ok(StreamTls { client: Arc::new(client), server: Arc::new(server) })
}
