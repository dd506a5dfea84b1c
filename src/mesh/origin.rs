//! Signed origins: nothing about node V enters the link-state database unless V said it.
//!
//! In a TLS mesh every advertisement is signed by its origin with the private key of its
//! node certificate ([`CertSigner`], the signer hook of `mesh::state`) and checked by the
//! link reader before it reaches the state machine ([`Verifier`]): the chain verifies
//! against the configured CAs, the leaf's node-ID SAN (the otherName `transport::tls`
//! reads for links) names the advertisement's origin, and the signature over
//! [`Lsa::signed_message`] is valid. Each certificate's chain is verified once and cached
//! by digest. A plain-TCP ("trusted network") mesh has nothing to sign with; there, as in
//! TLS meshes, a link whose peer is not a relay may carry only that peer's own
//! advertisements. docs/SECURITY.md says what this does and does not stop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};

use crate::logging::Throttle;
use crate::transport::TlsContext;
use crate::transport::tls::sha256;
use crate::wire::{Hello, Lsa, LsaSig, MAX_FRAME, MAX_SIG_CERT, MAX_SIG_CHAIN, MAX_SIGNATURE, NodeId};

/// What this node signs with, by preference; its key's type decides which applies.
const SCHEMES: [SignatureScheme; 4] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

/// Signs this node's own advertisements where the state machine originates them.
pub trait LsaSigner: Send + Sync + std::fmt::Debug {
    /// Sets `lsa.sig`. A node that cannot sign sends the advertisement unsigned (its
    /// peers drop it) and logs why.
    fn sign(&self, lsa: &mut Lsa);
}

/// Why an advertisement was refused, or could not be signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    #[error("unsigned advertisement")]
    Unsigned,
    #[error("the signing certificate does not verify: {0}")]
    Chain(String),
    #[error("the signing certificate names {names:?}, not the origin {origin}")]
    NotNamed { origin: NodeId, names: Vec<String> },
    #[error("unsupported signature scheme {0:#06x}")]
    Scheme(u16),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("a link to {peer}, which is not a relay, carried an advertisement of {origin}")]
    NotPeer { peer: NodeId, origin: NodeId },
    #[error("cannot sign: {0}")]
    Sign(String),
}

impl OriginError {
    /// The `reason` label of `receptor_adverts_dropped_total`.
    pub fn label(&self) -> &'static str {
        match self {
            OriginError::Unsigned => "unsigned",
            OriginError::NotPeer { .. } => "not_origin",
            _ => "forged",
        }
    }
}

/// Signs with the key of the node certificate (`[tls]`), following reloads.
#[derive(Debug, Clone)]
pub struct CertSigner {
    tls: TlsContext,
}

impl CertSigner {
    pub fn new(tls: TlsContext) -> CertSigner {
        CertSigner { tls }
    }

    /// The signature block for `lsa` (whose own `sig` is ignored).
    pub fn signature(&self, lsa: &Lsa) -> Result<LsaSig, OriginError> {
        let creds = self.tls.credentials().map_err(|e| OriginError::Sign(e.to_string()))?;
        let signer = creds.key.choose_scheme(&SCHEMES).ok_or_else(|| {
            OriginError::Sign(format!("no signature scheme for a {:?} key", creds.key.algorithm()))
        })?;
        let signed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let signature =
            signer.sign(&lsa.signed_message(signed_at)).map_err(|e| OriginError::Sign(e.to_string()))?;
        let chain = creds.chain.iter().take(MAX_SIG_CHAIN).map(|c| Bytes::copy_from_slice(c)).collect();
        let scheme = u16::from(signer.scheme());
        let sig = LsaSig { scheme, signed_at, chain, signature: Bytes::from(signature) };
        // Never a frame the neighbours must refuse (it would close the link).
        let cert = sig.chain.iter().map(Bytes::len).max().unwrap_or(0);
        let frame = Lsa { sig: Some(sig.clone()), ..lsa.clone() }.encoded_len() - 4;
        if cert > MAX_SIG_CERT || sig.signature.len() > MAX_SIGNATURE || frame > MAX_FRAME {
            return Err(OriginError::Sign(format!(
                "the signed advertisement exceeds the protocol's limits (largest certificate {cert} \
                 bytes, at most {MAX_SIG_CERT}; signature {} bytes, at most {MAX_SIGNATURE}; frame \
                 {frame} bytes, at most {MAX_FRAME})",
                sig.signature.len()
            )));
        }
        Ok(sig)
    }
}

impl LsaSigner for CertSigner {
    fn sign(&self, lsa: &mut Lsa) {
        lsa.sig = None;
        match self.signature(lsa) {
            Ok(sig) => lsa.sig = Some(sig),
            Err(e) => {
                static FAILED: Throttle = Throttle::new(Duration::from_secs(60), 3);
                if let Some(suppressed) = FAILED.allow() {
                    tracing::error!(suppressed, "advertisement sent unsigned (peers will drop it): {e}");
                }
            }
        }
    }
}

/// A certificate whose chain verified: the node IDs it names, and until when.
#[derive(Debug, Clone)]
struct Verified {
    node_ids: Vec<String>,
    not_after: i64,
}

/// Verified certificates by SHA-256 of the leaf, for one set of CAs.
#[derive(Debug, Default)]
struct CertCache {
    /// The CA store the entries were verified against (a reload swaps it).
    roots: usize,
    map: HashMap<[u8; 32], Verified>,
}

/// Advertisements verified lately, by digest of (signed message, signature, leaf): a
/// flooded advertisement reaches a node once per relay link, and is checked only once.
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

/// How many verified advertisements [`Recent`] remembers.
const RECENT: usize = 4096;

/// Checks advertisements' signatures against the node's CAs (`[tls] ca`).
#[derive(Debug)]
pub struct Verifier {
    tls: TlsContext,
    algs: &'static [&'static dyn SignatureVerificationAlgorithm],
    cache: Mutex<CertCache>,
    recent: Mutex<Recent>,
    capacity: usize,
}

impl Verifier {
    /// `capacity`: most certificates remembered as verified (`limits.max_nodes`: one per
    /// node of the largest database).
    pub fn new(tls: TlsContext, capacity: usize) -> Verifier {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms.all;
        Verifier {
            tls,
            algs,
            cache: Mutex::new(CertCache::default()),
            recent: Mutex::new(Recent::default()),
            capacity: capacity.max(1),
        }
    }

    /// Whether `lsa` is signed by its origin with a certificate from our CAs.
    pub fn verify(&self, lsa: &Lsa) -> Result<(), OriginError> {
        let sig = lsa.sig.as_ref().ok_or(OriginError::Unsigned)?;
        let leaf = sig.chain.first().ok_or_else(|| OriginError::Chain("no certificate".into()))?;
        let names = self.names(&sig.chain)?;
        // A client session (NODE~TAG) signs with NODE's certificate.
        if !names.iter().any(|n| n == lsa.origin.principal().as_str()) {
            return Err(OriginError::NotNamed { origin: lsa.origin.clone(), names });
        }
        let alg = verification_alg(sig.scheme).ok_or(OriginError::Scheme(sig.scheme))?;
        let message = lsa.signed_message(sig.signed_at);
        let seen = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [&message[..], &sig.scheme.to_be_bytes(), &sig.signature, &sha256(leaf)] {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part);
            }
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            out
        };
        if self.recent.lock().is_ok_and(|r| r.set.contains(&seen)) {
            return Ok(());
        }
        let leaf = CertificateDer::from(leaf.as_ref());
        let cert = webpki::EndEntityCert::try_from(&leaf).map_err(|e| OriginError::Chain(e.to_string()))?;
        cert.verify_signature(alg, &message, &sig.signature).map_err(|_| OriginError::BadSignature)?;
        if let Ok(mut r) = self.recent.lock() {
            if r.set.insert(seen) {
                r.order.push_back(seen);
            }
            while r.order.len() > RECENT {
                if let Some(old) = r.order.pop_front() {
                    r.set.remove(&old);
                }
            }
        }
        Ok(())
    }

    /// The node IDs the chain's leaf names, once the chain verified (cached).
    fn names(&self, chain: &[Bytes]) -> Result<Vec<String>, OriginError> {
        let creds = self.tls.credentials().map_err(|e| OriginError::Chain(e.to_string()))?;
        let roots_id = Arc::as_ptr(&creds.roots) as usize;
        let leaf = chain.first().ok_or_else(|| OriginError::Chain("no certificate".into()))?;
        let digest = sha256(leaf);
        let now = UnixTime::now();
        let now_secs = now.as_secs() as i64;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.roots != roots_id {
                cache.map.clear();
                cache.roots = roots_id;
            }
            match cache.map.get(&digest) {
                Some(v) if v.not_after >= now_secs => return Ok(v.node_ids.clone()),
                Some(_) => {
                    cache.map.remove(&digest);
                }
                None => {}
            }
        }
        let ders: Vec<CertificateDer<'_>> = chain.iter().map(|c| CertificateDer::from(c.as_ref())).collect();
        let cert =
            webpki::EndEntityCert::try_from(&ders[0]).map_err(|e| OriginError::Chain(e.to_string()))?;
        let verify = |usage| {
            cert.verify_for_usage(self.algs, &creds.roots.roots, &ders[1..], now, usage, None, None)
                .map(|_| ())
        };
        // Node certificates serve both ends of links; either purpose will do.
        verify(webpki::KeyUsage::client_auth())
            .or_else(|_| verify(webpki::KeyUsage::server_auth()))
            .map_err(|e| OriginError::Chain(e.to_string()))?;
        let node_ids = crate::transport::tls::node_ids_in_der(leaf).map_err(OriginError::Chain)?;
        let not_after = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, c)| c.validity().not_after.timestamp())
            .map_err(|e| OriginError::Chain(e.to_string()))?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.roots == roots_id {
                if cache.map.len() >= self.capacity {
                    // Bounded: forget an arbitrary entry (it is verified again if it returns).
                    if let Some(k) = cache.map.keys().next().copied() {
                        cache.map.remove(&k);
                    }
                }
                cache.map.insert(digest, Verified { node_ids: node_ids.clone(), not_after });
            }
        }
        Ok(node_ids)
    }

    /// Certificates currently remembered as verified.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.map.len()).unwrap_or(0)
    }
}

/// The one verification algorithm of each scheme this implementation signs with (TLS 1.3
/// semantics: the ECDSA schemes name their curve).
fn verification_alg(scheme: u16) -> Option<&'static dyn SignatureVerificationAlgorithm> {
    use webpki::ring as alg;
    Some(match SignatureScheme::from(scheme) {
        SignatureScheme::ECDSA_NISTP256_SHA256 => alg::ECDSA_P256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384 => alg::ECDSA_P384_SHA384,
        SignatureScheme::ED25519 => alg::ED25519,
        SignatureScheme::RSA_PSS_SHA256 => alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        SignatureScheme::RSA_PSS_SHA384 => alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        SignatureScheme::RSA_PSS_SHA512 => alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        _ => return None,
    })
}

/// Whether a link's peer may relay other nodes' advertisements: not a short-lived client
/// (`EPHEMERAL`) nor a leaf (`LEAF`), which speak only for themselves ([`Hello::not_relay`]).
pub(crate) fn is_relay(peer: &Hello) -> bool {
    !peer.not_relay()
}

/// The origin rule of a node's links.
#[derive(Debug, Clone)]
pub(crate) enum OriginCheck {
    /// A node with `[tls]`: every advertisement must be signed by its origin.
    Signed(Arc<Verifier>),
    /// A plain-TCP ("trusted network") node: no signatures.
    TrustedNetwork,
}

impl OriginCheck {
    /// Whether an advertisement that arrived from `peer` may reach the state machine.
    pub(crate) fn check(&self, peer: &Hello, lsa: &Lsa) -> Result<(), OriginError> {
        if !is_relay(peer) && lsa.origin != peer.node_id {
            return Err(OriginError::NotPeer { peer: peer.node_id.clone(), origin: lsa.origin.clone() });
        }
        match self {
            OriginCheck::Signed(v) => v.verify(lsa),
            OriginCheck::TrustedNetwork => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "origin_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "compat_tests.rs"]
mod compat_tests;
