//! The host-local CA: created on first start in the state directory (key mode 0600, never
//! logged), it signs a leaf per SNI on demand. Agents trust it through the bundle that
//! `enforcer exec` points SSL_CERT_FILE, REQUESTS_CA_BUNDLE and NODE_EXTRA_CA_CERTS at.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::CertifiedKey,
};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the CA key or certificate in {0} is unusable: {1}")]
    Corrupt(PathBuf, String),
    #[error("signing key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// File names inside `<state_dir>/ca`.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const BUNDLE: &str = "bundle.pem";

/// Where the system's trust store usually lives (Debian/Ubuntu, Fedora/RHEL, Alpine, SUSE).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// Leaves live a week and are re-minted a day before they expire.
const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);

pub struct LocalCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    leaves: Mutex<HashMap<String, (Arc<CertifiedKey>, SystemTime)>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.into(),
        source,
    }
}

impl LocalCa {
    /// Load the CA from `dir`, creating it (and the trust bundle) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        if !cert_path.exists() || !key_path.exists() {
            create(&cert_path, &key_path)?;
        }
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| CaError::Corrupt(key_path.clone(), e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| CaError::Corrupt(cert_path.clone(), e.to_string()))?;
        let cert_der = pem_to_der(&cert_pem)
            .ok_or_else(|| CaError::Corrupt(cert_path.clone(), "no certificate".into()))?;
        let ca = Self {
            dir: dir.into(),
            issuer,
            cert_der,
            leaves: Mutex::new(HashMap::new()),
        };
        ca.write_bundle(&cert_pem)?;
        Ok(ca)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.dir.join(BUNDLE)
    }

    /// The agents' trust bundle: our CA followed by the system roots, so agents keep
    /// trusting everything else they did before.
    fn write_bundle(&self, ca_pem: &str) -> Result<(), CaError> {
        let mut bundle = ca_pem.to_string();
        if let Some(system) = SYSTEM_BUNDLES
            .iter()
            .find_map(|p| fs::read_to_string(p).ok())
        {
            bundle.push('\n');
            bundle.push_str(&system);
        }
        let path = self.bundle_path();
        let tmp = path.with_extension("pem.tmp");
        fs::write(&tmp, bundle).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// A leaf for `name` (a DNS name from SNI, or an IP address when the agent sent none),
    /// minted on first use and cached until shortly before it expires.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let now = SystemTime::now();
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((key, expires)) = leaves.get(name) {
            if now + LEAF_RENEW_BEFORE < *expires {
                return Ok(key.clone());
            }
        }
        let (key, expires) = self.mint(name, now)?;
        leaves.insert(name.to_string(), (key.clone(), expires));
        Ok(key)
    }

    fn mint(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<(Arc<CertifiedKey>, SystemTime), CaError> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.to_string().try_into()?),
        }];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.not_before = (now - Duration::from_secs(3600)).into();
        let expires = now + LEAF_LIFETIME;
        params.not_after = expires.into();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&der_key)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        Ok((Arc::new(CertifiedKey::new(chain, signing)), expires))
    }
}

fn create(cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("MCP Enforcer local CA ({host})"),
    );
    dn.push(DnType::OrganizationName, "MCP Enforcer");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // The key is written first, created with mode 0600 so it is never readable by others.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_path)
        .map_err(io(key_path))?;
    f.write_all(key.serialize_pem().as_bytes())
        .map_err(io(key_path))?;
    f.sync_all().map_err(io(key_path))?;
    fs::write(cert_path, cert.pem()).map_err(io(cert_path))?;
    Ok(())
}

fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_a_private_key_and_mints_cached_leaves() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("enf-ca-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca = LocalCa::load_or_create(&dir).unwrap();
        let mode = fs::metadata(dir.join(CA_KEY)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = fs::read(dir.join(CA_CERT)).unwrap();
        let again = LocalCa::load_or_create(&dir).unwrap();
        assert_eq!(fs::read(dir.join(CA_CERT)).unwrap(), first, "created once");
        let bundle = fs::read_to_string(ca.bundle_path()).unwrap();
        assert!(bundle.starts_with(&String::from_utf8(first).unwrap()));
        let a = ca.leaf("mcp.example.test").unwrap();
        let b = ca.leaf("mcp.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "cached");
        assert_eq!(a.cert.len(), 2, "leaf + CA");
        assert!(
            again.leaf("10.1.2.3").is_ok(),
            "IP SAN when there is no SNI"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
