//! Work signing: JWTs (RS512) that say "this work, on this node, by this requester, now".
//!
//! A receptord signer binds each token to its target node (`aud`), the requester that
//! presents it (`sub`), one operation (`op`: submit, cancel, release, results), the work
//! type, a digest of the parameters, the payload's digest when the payload is known up
//! front, and the unit for operations on an existing unit; it carries a unique ID (`jti`)
//! and its issue time (`iat`). The verifier checks every binding; the one-use rule (each
//! `jti` once for the token's lifetime) is enforced by `work::admit`, which outlives key
//! reloads.
//!
//! Go Receptor signers (1.4) send only `aud` (a string) and `exp`: such a token is
//! [`Verified::legacy`], replayable within its lifetime; `work::admit` decides where it is
//! still accepted (docs/SECURITY.md).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest token accepted (a receptord token is about 1 KiB with a 4096-bit key).
pub const MAX_TOKEN: usize = 16 * 1024;
/// Longest `jti` accepted (ours are 32 hex digits); bounds the replay cache's entries.
pub const MAX_JTI: usize = 64;
/// How far in the future a token's `iat` may lie (clock skew between nodes).
const IAT_SKEW: u64 = 60;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyError {
    pub path: String,
    pub reason: String,
}

/// What a token authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Submit,
    Cancel,
    /// `release` and `force-release`.
    Release,
    Results,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Submit => "submit",
            Op::Cancel => "cancel",
            Op::Release => "release",
            Op::Results => "results",
        }
    }
}

/// What one token is for: the signer fills it in, the verifier compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The node that runs the work (`aud`).
    pub node: String,
    /// The node presenting the token (`sub`); `None` when it has no node ID.
    pub requester: Option<String>,
    pub op: Op,
    pub work_type: String,
    /// [`params_digest`] of the submission's parameters (submit only).
    pub params: Option<String>,
    /// SHA-256 (hex) of the payload, when it is known before the submission.
    pub payload: Option<String>,
    /// The unit operated on (cancel, release, results).
    pub unit: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: Audience,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    work_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "a signature is required: work type {work_type} only accepts work signed with the key of \
         [work.verification] (could not verify signature: signature is empty)"
    )]
    Missing { work_type: String },
    #[error("could not verify signature: verifying key not specified")]
    NoKey,
    #[error("work type did not expect a signature")]
    Unexpected,
    #[error("could not verify signature: {0}")]
    Invalid(String),
    #[error("token audience did not match node ID")]
    Audience,
    #[error("could not verify signature: the token does not match this request's {claim}")]
    Mismatch { claim: &'static str },
    #[error("could not verify signature: the token was already used (replayed)")]
    Replayed,
    #[error(
        "could not verify signature: too many unexpired tokens seen (limits.signed_tokens); try again later"
    )]
    CacheFull,
    #[error(
        "could not verify signature: the token could not be recorded against replay ({0}); try again later"
    )]
    NotRecorded(String),
    #[error(
        "could not verify signature: the token has no jti (a Go Receptor token, replayable until it \
         expires); submissions need a receptord token, or [work.verification] \
         accept_replayable_go_tokens = true"
    )]
    Legacy,
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::transport::tls::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// SHA-256 (hex) of a file's contents, read in chunks.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(crate::transport::tls::hex(ctx.finish().as_ref()))
}

/// [`file_sha256`] off the async runtime (payloads may be large).
pub async fn payload_digest(path: std::path::PathBuf) -> Result<String, String> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || file_sha256(&path))
        .await
        .map_err(|e| format!("hashing {shown}: {e}"))?
        .map_err(|e| format!("reading {shown}: {e}"))
}

/// The digest a token binds parameters by: SHA-256 of their JSON with object keys sorted
/// at every level, so signer and verifier agree whatever order the fields travelled in.
pub fn params_digest(params: &serde_json::Map<String, serde_json::Value>) -> String {
    fn canonical(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&m[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(&serde_json::Value::Object(params.clone()), &mut text);
    sha256_hex(text.as_bytes())
}

/// [`params_digest`] of string parameters (work units' `key=value` fields).
pub fn string_params_digest(params: &std::collections::BTreeMap<String, String>) -> String {
    let m = params.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    params_digest(&m)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Signs work for remote nodes.
#[derive(Clone)]
pub struct Signer {
    key: Arc<EncodingKey>,
    lifetime: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads a PEM RSA private key (PKCS#1 or PKCS#8).
    pub fn load(path: &Path, lifetime: Duration) -> Result<Signer, KeyError> {
        let err = |reason: String| KeyError { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| err(format!("not an RSA private key: {e}")))?;
        Ok(Signer { key: Arc::new(key), lifetime })
    }

    /// A one-use token for `grant`.
    pub fn token(&self, grant: &Grant) -> Result<String, String> {
        let now = now_secs();
        let claims = Claims {
            // A string, as Go Receptor writes it (its verifier takes either form).
            aud: Audience::One(grant.node.clone()),
            exp: now + self.lifetime.as_secs().max(1),
            iat: Some(now),
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            sub: grant.requester.clone(),
            op: Some(grant.op),
            work_type: Some(grant.work_type.clone()),
            params_sha256: grant.params.clone(),
            payload_sha256: grant.payload.clone(),
            unit: grant.unit.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS512), &claims, &self.key)
            .map_err(|e| format!("cannot sign work: {e}"))
    }
}

/// A token that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its `jti` (`None` for a Go Receptor token).
    pub jti: Option<String>,
    /// When it expires (seconds since the epoch): how long its `jti` must be remembered.
    pub exp: u64,
    /// The payload digest it demands, if any.
    pub payload: Option<String>,
}

impl Verified {
    /// A Go Receptor token: only `aud` and `exp`, so nothing stops its replay.
    pub fn legacy(&self) -> bool {
        self.jti.is_none()
    }
}

/// Verifies signed work.
#[derive(Clone)]
pub struct Verifier {
    key: Arc<DecodingKey>,
}

impl Verifier {
    /// Loads a PEM RSA public key (PKIX `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`).
    pub fn load(path: &Path) -> Result<Verifier, KeyError> {
        let err = |reason: String| KeyError { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| err(format!("not an RSA public key: {e}")))?;
        Ok(Verifier { key: Arc::new(key) })
    }

    /// Checks `token`'s signature and expiry, that it is for `want.node`, and — for a
    /// receptord token — every other binding of `want`. A token without `jti` is returned
    /// as [`Verified::legacy`] when it carries no receptord claims at all.
    pub fn verify(&self, token: &str, want: &Grant) -> Result<Verified, SignatureError> {
        if token.len() > MAX_TOKEN {
            return Err(SignatureError::Invalid(format!("token longer than {MAX_TOKEN} bytes")));
        }
        let mut v = Validation::new(Algorithm::RS512);
        v.set_audience(&[want.node.as_str()]);
        v.leeway = 0;
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.key, &v) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidAudience) => {
                return Err(SignatureError::Audience);
            }
            Err(e) => return Err(SignatureError::Invalid(e.to_string())),
        };
        let Some(jti) = claims.jti.clone() else {
            let bound = claims.iat.is_some()
                || claims.sub.is_some()
                || claims.op.is_some()
                || claims.work_type.is_some()
                || claims.params_sha256.is_some()
                || claims.payload_sha256.is_some()
                || claims.unit.is_some();
            if bound {
                return Err(SignatureError::Invalid("a bound token without jti".into()));
            }
            return Ok(Verified { jti: None, exp: claims.exp, payload: None });
        };
        if jti.is_empty() || jti.len() > MAX_JTI {
            return Err(SignatureError::Invalid(format!("jti must be 1 to {MAX_JTI} characters")));
        }
        match claims.iat {
            Some(iat) if iat <= now_secs() + IAT_SKEW => {}
            Some(_) => return Err(SignatureError::Invalid("issued in the future".into())),
            None => return Err(SignatureError::Invalid("a token with jti needs iat".into())),
        }
        let same = |claim: &'static str, have: &Option<String>, want: &Option<String>| {
            if have == want { Ok(()) } else { Err(SignatureError::Mismatch { claim }) }
        };
        if claims.op != Some(want.op) {
            return Err(SignatureError::Mismatch { claim: "operation" });
        }
        same("work type", &claims.work_type, &Some(want.work_type.clone()))?;
        // The requester binds when the verifier knows who presents the token.
        if want.requester.is_some() {
            same("requester", &claims.sub, &want.requester)?;
        }
        match want.op {
            Op::Submit => same("parameters", &claims.params_sha256, &want.params)?,
            _ => same("work unit", &claims.unit, &want.unit)?,
        }
        Ok(Verified { jti: Some(jti), exp: claims.exp, payload: claims.payload_sha256 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let mut rng = rand::thread_rng();
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
        let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
        std::fs::write(&private, key.to_pkcs8_pem(LineEnding::LF).expect("pem").as_bytes()).expect("write");
        let pubpem = key.to_public_key().to_public_key_pem(LineEnding::LF).expect("pem");
        std::fs::write(&public, pubpem).expect("write");
        (private, public)
    }

    fn submit(node: &str) -> Grant {
        let params = serde_json::Map::from_iter([("params".to_owned(), serde_json::json!("-x"))]);
        Grant {
            node: node.into(),
            requester: Some("ctl".into()),
            op: Op::Submit,
            work_type: "echo".into(),
            params: Some(params_digest(&params)),
            payload: Some(sha256_hex(b"payload")),
            unit: None,
        }
    }

    #[test]
    fn tokens_bind_node_requester_operation_work_type_params_and_unit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = keypair(dir.path());
        let signer = Signer::load(&private, Duration::from_secs(60)).expect("signer");
        let verifier = Verifier::load(&public).expect("verifier");
        let want = submit("node3");
        let token = signer.token(&want).expect("token");
        let ok = verifier.verify(&token, &want).expect("verifies");
        assert!(!ok.legacy());
        assert_eq!(ok.payload, want.payload);
        assert_ne!(signer.token(&want).expect("token"), token, "every token is unique");
        let mismatch = |g: Grant| verifier.verify(&token, &g);
        assert_eq!(mismatch(submit("node4")), Err(SignatureError::Audience));
        let other = Grant { requester: Some("relay".into()), ..want.clone() };
        assert_eq!(mismatch(other), Err(SignatureError::Mismatch { claim: "requester" }));
        let other = Grant { work_type: "rm".into(), ..want.clone() };
        assert_eq!(mismatch(other), Err(SignatureError::Mismatch { claim: "work type" }));
        let other = Grant { params: Some(params_digest(&serde_json::Map::new())), ..want.clone() };
        assert_eq!(mismatch(other), Err(SignatureError::Mismatch { claim: "parameters" }));
        let other = Grant { op: Op::Cancel, unit: Some("AbC".into()), ..want.clone() };
        assert_eq!(mismatch(other), Err(SignatureError::Mismatch { claim: "operation" }));
        let cancel = Grant { op: Op::Cancel, unit: Some("AbC".into()), params: None, payload: None, ..want };
        let t = signer.token(&cancel).expect("token");
        assert!(verifier.verify(&t, &cancel).is_ok());
        let other = Grant { unit: Some("XyZ".into()), ..cancel.clone() };
        assert_eq!(verifier.verify(&t, &other), Err(SignatureError::Mismatch { claim: "work unit" }));
        assert!(verifier.verify(&format!("{t}x"), &cancel).is_err());
        assert!(verifier.verify(&"a".repeat(MAX_TOKEN + 1), &cancel).is_err());
    }

    #[test]
    fn go_receptor_tokens_verify_as_legacy_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = keypair(dir.path());
        let signer = Signer::load(&private, Duration::from_secs(60)).expect("signer");
        let verifier = Verifier::load(&public).expect("verifier");
        // Go Receptor's claims: jwt.StandardClaims{ExpiresAt, Audience} (aud a string).
        let go = |exp: u64| {
            let claims = serde_json::json!({"aud": "node3", "exp": exp});
            jsonwebtoken::encode(&Header::new(Algorithm::RS512), &claims, &signer.key).expect("encode")
        };
        let v = verifier.verify(&go(now_secs() + 60), &submit("node3")).expect("verifies");
        assert!(v.legacy());
        assert_eq!(verifier.verify(&go(now_secs() + 60), &submit("node4")), Err(SignatureError::Audience));
        assert!(verifier.verify(&go(now_secs() - 10), &submit("node3")).is_err());
        // A token with receptord's claims but no jti is not taken for a Go token.
        let claims = serde_json::json!({"aud": "node3", "exp": now_secs() + 60, "op": "submit"});
        let half =
            jsonwebtoken::encode(&Header::new(Algorithm::RS512), &claims, &signer.key).expect("encode");
        assert!(matches!(verifier.verify(&half, &submit("node3")), Err(SignatureError::Invalid(_))));
    }

    #[test]
    fn params_digest_ignores_key_order() {
        let a: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,{"q":1,"p":2}]}}"#).expect("json");
        let b: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"a":{"x":[1,{"p":2,"q":1}],"y":2},"b":1}"#).expect("json");
        assert_eq!(params_digest(&a), params_digest(&b));
        let c: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"b":2}"#).expect("json");
        assert_ne!(params_digest(&a), params_digest(&c));
    }
}
