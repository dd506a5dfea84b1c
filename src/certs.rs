//! Certificate tooling (`receptor cert …`): a CA, node certificates that carry the node ID
//! as a subjectAltName otherName (OID 1.3.6.1.4.1.2312.19.1, UTF8String — Go Receptor's
//! convention, so its PKI and ours are interchangeable), and the CSR flow so a private key
//! never leaves its host. Keys are written 0600; nothing is overwritten without `force`.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, OtherNameValue, SanType,
};
use time::OffsetDateTime;

pub use crate::transport::tls::NODE_ID_OID;

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} already exists (use --force to overwrite)")]
    Exists { path: String },
    #[error("{what}: {source}")]
    Rcgen { what: String, source: rcgen::Error },
    #[error("{0}")]
    Invalid(String),
}

/// What a node certificate names.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub node_ids: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

fn rc(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Rcgen { what: what.to_owned(), source }
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io { path: path.display().to_string(), source })
}

/// Writes `text` to `path`, refusing to overwrite unless `force`, with `mode` permissions.
pub fn write_new(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), CertError> {
    let shown = path.display().to_string();
    let mut opts = OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => CertError::Exists { path: shown.clone() },
        _ => CertError::Io { path: shown.clone(), source },
    })?;
    f.write_all(text.as_bytes()).map_err(|source| CertError::Io { path: shown.clone(), source })?;
    if force {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(mode);
        std::fs::set_permissions(path, perms).map_err(|source| CertError::Io { path: shown, source })?;
    }
    Ok(())
}

/// The kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 (fast, small; the default).
    #[default]
    EcdsaP256,
    /// RSA, 4096 bits (for PKI that requires RSA).
    Rsa4096,
}

/// Generates a key of `kind`.
pub fn generate_key(kind: KeyType) -> Result<KeyPair, CertError> {
    match kind {
        KeyType::EcdsaP256 => KeyPair::generate().map_err(rc("generating an ECDSA key")),
        KeyType::Rsa4096 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 4096)
                .map_err(|e| CertError::Invalid(format!("generating an RSA key: {e}")))?;
            let pem = key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| CertError::Invalid(format!("encoding the RSA key: {e}")))?;
            KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
                .map_err(rc("loading the RSA key"))
        }
    }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
}

/// A new self-signed CA (ECDSA P-256): returns (certificate PEM, key PEM).
pub fn init_ca(common_name: &str, days: u32, kind: KeyType) -> Result<(String, String), CertError> {
    let key = generate_key(kind)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(rc("signing the CA"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn node_params(subject: &Subject) -> Result<CertificateParams, CertError> {
    let first = subject.node_ids.first().ok_or_else(|| CertError::Invalid("a node ID is required".into()))?;
    for id in &subject.node_ids {
        // Certificate-less clients join under reserved IDs: no certified node may have one.
        check_node_id(id)?;
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, first.as_str());
    for id in &subject.node_ids {
        let value = OtherNameValue::Utf8String(id.clone());
        params.subject_alt_names.push(SanType::OtherName((NODE_ID_OID.to_vec(), value)));
    }
    for dns in &subject.dns {
        let name =
            dns.as_str().try_into().map_err(|_| CertError::Invalid(format!("invalid DNS name {dns:?}")))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    params.subject_alt_names.extend(subject.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(params)
}

fn leaf_usage(params: &mut CertificateParams, days: u32) {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    validity(params, days);
}

/// Loads the CA as an issuer.
fn issuer(ca_cert: &Path, ca_key: &Path) -> Result<(rcgen::Certificate, KeyPair), CertError> {
    let key = KeyPair::from_pem(&read(ca_key)?).map_err(rc("reading the CA key"))?;
    let params =
        CertificateParams::from_ca_cert_pem(&read(ca_cert)?).map_err(rc("reading the CA certificate"))?;
    let cert = params.self_signed(&key).map_err(rc("loading the CA"))?;
    Ok((cert, key))
}

/// A node key and certificate signed by the CA: returns (certificate PEM, key PEM).
pub fn issue(
    ca_cert: &Path,
    ca_key: &Path,
    subject: &Subject,
    days: u32,
) -> Result<(String, String), CertError> {
    let (ca, ca_key) = issuer(ca_cert, ca_key)?;
    let key = generate_key(KeyType::EcdsaP256)?;
    let mut params = node_params(subject)?;
    leaf_usage(&mut params, days);
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(rc("signing the node certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A certificate signing request for a node (and the new key, unless `key_pem` is given).
pub fn make_request(subject: &Subject, key_pem: Option<&str>) -> Result<(String, Option<String>), CertError> {
    let (key, new_key) = match key_pem {
        Some(pem) => (KeyPair::from_pem(pem).map_err(rc("reading the key"))?, None),
        None => {
            let key = KeyPair::generate().map_err(rc("generating the node key"))?;
            let pem = key.serialize_pem();
            (key, Some(pem))
        }
    };
    let params = node_params(subject)?;
    let csr = params.serialize_request(&key).map_err(rc("building the request"))?;
    Ok((csr.pem().map_err(rc("encoding the request"))?, new_key))
}

/// Signs a request with the CA, keeping its node IDs and names: returns the certificate PEM.
pub fn sign_request(req_pem: &str, ca_cert: &Path, ca_key: &Path, days: u32) -> Result<String, CertError> {
    let (ca, ca_key) = issuer(ca_cert, ca_key)?;
    let mut csr = CertificateSigningRequestParams::from_pem(req_pem).map_err(rc("reading the request"))?;
    let has_node_id = csr
        .params
        .subject_alt_names
        .iter()
        .any(|s| matches!(s, SanType::OtherName((oid, _)) if *oid == NODE_ID_OID));
    if !has_node_id {
        return Err(CertError::Invalid(
            "the request names no node ID (otherName 1.3.6.1.4.1.2312.19.1)".into(),
        ));
    }
    leaf_usage(&mut csr.params, days);
    let cert = csr.signed_by(&ca, &ca_key).map_err(rc("signing the request"))?;
    // The node IDs as TLS will read them (whatever string type the request used): the
    // same rules as `issue` and `makereq`. Nothing is written when they fail.
    let ids = crate::transport::tls::node_ids_in_der(cert.der())
        .map_err(|e| CertError::Invalid(format!("the request's node IDs: {e}")))?;
    for id in &ids {
        check_node_id(id)?;
    }
    Ok(cert.pem())
}

/// A node ID a certificate may name: valid, and not one of the temporary IDs reserved for
/// clients without a certificate.
fn check_node_id(id: &str) -> Result<(), CertError> {
    let id = crate::wire::NodeId::new(id).map_err(|e| CertError::Invalid(e.to_string()))?;
    if crate::identity::may_join_uncertified(&id) {
        return Err(CertError::Invalid(format!(
            "node ID {id}: IDs starting with {} are reserved for clients without a certificate",
            crate::identity::UNCERTIFIED_PREFIX
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_node_ids_and_chain_to_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, ca_key) = init_ca("test CA", 10, KeyType::EcdsaP256).expect("ca");
        let (ca_path, key_path) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        write_new(&ca_path, &ca, 0o644, false).expect("write");
        write_new(&key_path, &ca_key, 0o600, false).expect("write");
        assert!(matches!(write_new(&key_path, "x", 0o600, false), Err(CertError::Exists { .. })));
        let subject = Subject { node_ids: vec!["node1".into()], dns: vec!["n1.example".into()], ips: vec![] };
        let (cert, _key) = issue(&ca_path, &key_path, &subject, 1).expect("issue");
        let ids = crate::transport::tls::node_ids_in_pem(&cert).expect("parse");
        assert_eq!(ids, vec!["node1".to_owned()]);

        let (req, key) =
            make_request(&Subject { node_ids: vec!["node2".into()], ..Default::default() }, None)
                .expect("request");
        assert!(key.is_some());
        let signed = sign_request(&req, &ca_path, &key_path, 1).expect("sign");
        assert_eq!(crate::transport::tls::node_ids_in_pem(&signed).expect("parse"), vec!["node2".to_owned()]);
    }

    #[test]
    fn no_request_for_a_reserved_id_is_signed_whatever_its_string_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, ca_key) = init_ca("test CA", 10, KeyType::EcdsaP256).expect("ca");
        let (ca_path, key_path) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        write_new(&ca_path, &ca, 0o644, false).expect("write");
        write_new(&key_path, &ca_key, 0o600, false).expect("write");
        let reserved = Subject { node_ids: vec!["receptor-client-zz".into()], ..Default::default() };
        assert!(matches!(make_request(&reserved, None), Err(CertError::Invalid(_))));
        // A request made by Go Receptor 1.4's `--cert-makereq nodeid=receptor-client-zz`
        // (its otherName holds the ID as a PrintableString).
        let go = include_str!("../tests/data/go-makereq-receptor-client-zz.csr");
        let signed = sign_request(go, &ca_path, &key_path, 1);
        assert!(matches!(signed, Err(CertError::Invalid(ref why)) if why.contains("reserved")), "{signed:?}");
    }

    #[test]
    fn an_rsa_ca_signs_node_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, ca_key) = init_ca("rsa CA", 10, KeyType::Rsa4096).expect("rsa ca");
        assert!(ca_key.contains("BEGIN PRIVATE KEY"));
        let (ca_path, key_path) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        write_new(&ca_path, &ca, 0o644, false).expect("write");
        write_new(&key_path, &ca_key, 0o600, false).expect("write");
        let subject = Subject { node_ids: vec!["node1".into()], ..Default::default() };
        let (cert, _) = issue(&ca_path, &key_path, &subject, 1).expect("issue");
        assert_eq!(crate::transport::tls::node_ids_in_pem(&cert).expect("parse"), vec!["node1".to_owned()]);
    }
}
