//! Work signing as Go Receptor does it: a node forwarding remote work with `signwork`
//! attaches a JWT (RS512, claims `aud` = [target node ID] and `exp`), and a node whose work
//! type has `verify_signature` checks it against its configured public key.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: Vec<String>,
    exp: u64,
}

/// Signs work for remote nodes.
#[derive(Clone)]
pub struct Signer {
    key: Arc<EncodingKey>,
    lifetime: Duration,
}

impl Signer {
    /// Loads a PEM RSA private key (PKCS#1 or PKCS#8).
    pub fn load(path: &Path, lifetime: Duration) -> Result<Signer, KeyError> {
        let err = |reason: String| KeyError { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| err(format!("not an RSA private key: {e}")))?;
        Ok(Signer { key: Arc::new(key), lifetime })
    }

    /// A token for `audience` (the node that will run the work).
    pub fn token(&self, audience: &str) -> Result<String, String> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + self.lifetime;
        let claims = Claims { aud: vec![audience.to_owned()], exp: exp.as_secs() };
        jsonwebtoken::encode(&Header::new(Algorithm::RS512), &claims, &self.key)
            .map_err(|e| format!("cannot sign work: {e}"))
    }
}

/// Verifies signed submissions.
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

    /// Checks `token`'s signature, expiry and that its audience names `node`. Errors
    /// carry Go Receptor's messages.
    pub fn verify(&self, token: &str, node: &str) -> Result<(), String> {
        let mut v = Validation::new(Algorithm::RS512);
        v.set_audience(&[node]);
        v.leeway = 0;
        match jsonwebtoken::decode::<Claims>(token, &self.key, &v) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidAudience) => {
                Err("token audience did not match node ID".into())
            }
            Err(e) => Err(format!("could not verify signature: {e}")),
        }
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

    #[test]
    fn tokens_round_trip_and_bind_the_audience() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = keypair(dir.path());
        let signer = Signer::load(&private, Duration::from_secs(60)).expect("signer");
        let verifier = Verifier::load(&public).expect("verifier");
        let token = signer.token("node3").expect("token");
        assert_eq!(verifier.verify(&token, "node3"), Ok(()));
        assert_eq!(verifier.verify(&token, "node4"), Err("token audience did not match node ID".into()));
        let tampered = format!("{}x", token);
        assert!(verifier.verify(&tampered, "node3").is_err());
        let past = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() - 10;
        let claims = Claims { aud: vec!["node3".into()], exp: past };
        let old = jsonwebtoken::encode(&Header::new(Algorithm::RS512), &claims, &signer.key).expect("encode");
        assert!(verifier.verify(&old, "node3").is_err());
    }
}
