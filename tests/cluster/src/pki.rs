//! Certificates and keys for one throwaway control plane: a CA, the API server's serving
//! certificate for 127.0.0.1, an admin client certificate in `system:masters`, and the key that
//! signs service-account tokens.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

/// Paths of the files [`generate`] wrote.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
    /// The real node's kubelet: client (`system:node:<name>` in `system:nodes`) and serving.
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
    pub kubelet_serving_cert: PathBuf,
    pub kubelet_serving_key: PathBuf,
    /// kube-proxy's client certificate (`system:kube-proxy`, bound to `system:node-proxier`).
    pub proxy_cert: PathBuf,
    pub proxy_key: PathBuf,
    /// The API server's client certificate towards aggregated APIs (`front-proxy-client`),
    /// whose requests carry the caller in `X-Remote-*` headers.
    pub front_proxy_cert: PathBuf,
    pub front_proxy_key: PathBuf,
    /// The serving certificate of the node's metrics APIs (metrics-server and the custom
    /// metrics adapter), for the names the aggregator dials.
    pub metrics_serving_cert: PathBuf,
    pub metrics_serving_key: PathBuf,
}

/// The name the API server's proxy to aggregated APIs presents.
pub const FRONT_PROXY_NAME: &str = "front-proxy-client";

/// The Service name metrics-server is registered under (`kube-system`), which the aggregator
/// puts in its TLS server name as `<name>.<namespace>.svc`.
pub const METRICS_SERVER_SERVICE: &str = "metrics-server";

/// The Service name the custom metrics adapter is registered under (`kube-system`).
pub const CUSTOM_METRICS_SERVICE: &str = "io360-metrics-adapter";

/// The real node's name, which its kubelet certificate carries.
pub const REAL_NODE_NAME: &str = "io360-node";

/// Writes a fresh PKI into `dir`.
pub(crate) fn generate(dir: &Path) -> Result<Pki> {
    let write = |name: &str, pem: String| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, pem)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    };

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "io360-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        // The node's address and the `kubernetes` Service's ClusterIP, which pods on the real
        // node dial.
        crate::isolate::NODE_IP.to_string(),
        "10.96.0.1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &ca)?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "io360-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &ca)?;

    let service_account_key = KeyPair::generate()?;

    let client = |cn: &str, org: &str| -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (kubelet_client_cert, kubelet_client_key) =
        client(&format!("system:node:{REAL_NODE_NAME}"), "system:nodes")?;
    let (proxy_cert, proxy_key) = client("system:kube-proxy", "system:node-proxier")?;
    let (front_proxy_cert, front_proxy_key) = client(FRONT_PROXY_NAME, "system:front-proxy")?;
    let metrics_serving_key = KeyPair::generate()?;
    let mut metrics_serving = CertificateParams::new(vec![
        format!("{METRICS_SERVER_SERVICE}.kube-system.svc"),
        format!("{CUSTOM_METRICS_SERVICE}.kube-system.svc"),
        crate::isolate::NODE_IP.to_string(),
    ])?;
    metrics_serving
        .distinguished_name
        .push(DnType::CommonName, METRICS_SERVER_SERVICE);
    metrics_serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let metrics_serving_cert = metrics_serving.signed_by(&metrics_serving_key, &ca)?;
    let kubelet_serving_key = KeyPair::generate()?;
    let mut kubelet_serving = CertificateParams::new(vec![
        REAL_NODE_NAME.to_string(),
        crate::isolate::NODE_IP.to_string(),
    ])?;
    kubelet_serving
        .distinguished_name
        .push(DnType::CommonName, REAL_NODE_NAME);
    kubelet_serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let kubelet_serving_cert = kubelet_serving.signed_by(&kubelet_serving_key, &ca)?;

    Ok(Pki {
        ca_cert: write("ca.crt", ca.pem())?,
        ca_key: write("ca.key", ca_key_pem)?,
        serving_cert: write("apiserver.crt", serving_cert.pem())?,
        serving_key: write("apiserver.key", serving_key.serialize_pem())?,
        admin_cert: write("admin.crt", admin_cert.pem())?,
        admin_key: write("admin.key", admin_key.serialize_pem())?,
        service_account_key: write("service-account.key", service_account_key.serialize_pem())?,
        service_account_public_key: write(
            "service-account.pub",
            service_account_key.public_key_pem(),
        )?,
        kubelet_client_cert: write("kubelet-client.crt", kubelet_client_cert)?,
        kubelet_client_key: write("kubelet-client.key", kubelet_client_key)?,
        kubelet_serving_cert: write("kubelet.crt", kubelet_serving_cert.pem())?,
        kubelet_serving_key: write("kubelet.key", kubelet_serving_key.serialize_pem())?,
        proxy_cert: write("kube-proxy.crt", proxy_cert)?,
        proxy_key: write("kube-proxy.key", proxy_key)?,
        front_proxy_cert: write("front-proxy-client.crt", front_proxy_cert)?,
        front_proxy_key: write("front-proxy-client.key", front_proxy_key)?,
        metrics_serving_cert: write("metrics-server.crt", metrics_serving_cert.pem())?,
        metrics_serving_key: write("metrics-server.key", metrics_serving_key.serialize_pem())?,
    })
}
