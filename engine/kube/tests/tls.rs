//! Connecting over TLS as real clusters require: the server is checked against the
//! kubeconfig's `certificate-authority-data`, and the client proves itself with
//! `client-certificate-data`/`client-key-data` (how kind and kubeadm clusters authenticate
//! their admin). The certificates are made for each run; the fake API server serves TLS with
//! rustls and asks for a client certificate signed by the same CA.

use runbook_fake_apiserver as support;

use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use runbook_core::effects::{Cluster, CommandOutput, ObjectKey, PodRef};
use runbook_kube::{connect, ConnectOptions, KubeCluster, KubeOptions, Policy};
use serde_json::json;
use support::FakeApi;
use tokio_rustls::rustls;

struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
    client_cert_pem: String,
    client_key_pem: String,
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA")
}

/// A CA, a server certificate for 127.0.0.1, and a client certificate for `kubernetes-admin`,
/// all from that CA; the server requires a client certificate from it.
fn pki() -> Pki {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = certificate_authority("runbook-test-ca");

    let server_key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &ca).expect("a server cert");

    let client_key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kubernetes-admin");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.signed_by(&client_key, &ca).expect("a client cert");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("the CA as a root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("a client verifier");
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .expect("a server config");
    Pki {
        ca_pem: ca.pem(),
        server,
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A kubeconfig with context `kind-tls` for `server`, trusting `ca_pem`, with `user`.
fn kubeconfig(dir: &std::path::Path, server: &str, ca_pem: &str, user: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: kind-tls\nclusters:\n- name: tls\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user: {user}\ncontexts:\n- name: kind-tls\n  context: {{cluster: tls, user: admin, namespace: shop}}\n",
            b64(ca_pem)
        ),
    )
    .expect("write the kubeconfig");
    path
}

fn options(kubeconfig: std::path::PathBuf) -> ConnectOptions {
    ConnectOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
        namespace: None,
        policy: Policy {
            call_timeout: std::time::Duration::from_secs(5),
            ..Policy::default()
        },
    }
}

#[tokio::test]
async fn a_cluster_with_its_own_ca_and_client_certificates_is_reached_and_read() {
    let pki = pki();
    let api = FakeApi::start_tls(Arc::new(pki.server)).await;
    api.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"replicas": 2}
    }));
    api.insert(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "openbao-0", "namespace": "shop"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "openbao", "image": "openbao:2"}]}
    }));
    api.script_exec(
        "shop",
        "openbao-0",
        &["bao", "status", "-format=json"],
        support::ExecReply {
            stdout: "{\"sealed\":true}\n".to_owned(),
            stderr: String::new(),
            exit_code: 2,
        },
    );
    assert!(api.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let user = format!(
        "{{client-certificate-data: {}, client-key-data: {}}}",
        b64(&pki.client_cert_pem),
        b64(&pki.client_key_pem)
    );
    let connection = connect(&options(kubeconfig(
        dir.path(),
        &api.url(),
        &pki.ca_pem,
        &user,
    )))
    .await
    .expect("connected over TLS with a client certificate");
    assert_eq!(connection.version, support::VERSION);
    assert_eq!(connection.namespace, "shop");
    let cluster = KubeCluster::new(
        connection.client.clone(),
        KubeOptions {
            namespace: connection.namespace.clone(),
            ..KubeOptions::default()
        },
    );
    let deployment = cluster
        .get(&ObjectKey {
            api_version: "apps/v1".to_owned(),
            kind: "Deployment".to_owned(),
            namespace: Some("shop".to_owned()),
            name: "api".to_owned(),
        })
        .await
        .expect("read over TLS");
    assert_eq!(deployment["spec"]["replicas"], 2);
    // Exec is a WebSocket upgrade of the same TLS connection's kind.
    let argv: Vec<String> = ["bao", "status", "-format=json"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    let output = cluster
        .exec(
            &PodRef {
                namespace: "shop".to_owned(),
                pod: "openbao-0".to_owned(),
                container: None,
            },
            &argv,
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("exec over TLS");
    assert_eq!(
        output,
        CommandOutput {
            exit_code: 2,
            stdout: "{\"sealed\":true}\n".to_owned(),
            stderr: String::new(),
        }
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_in_one_line() {
    let pki = pki();
    let api = FakeApi::start_tls(Arc::new(pki.server)).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let other = certificate_authority("someone-else");
    let user = format!(
        "{{client-certificate-data: {}, client-key-data: {}}}",
        b64(&pki.client_cert_pem),
        b64(&pki.client_key_pem)
    );
    let error = connect(&options(kubeconfig(
        dir.path(),
        &api.url(),
        &other.pem(),
        &user,
    )))
    .await
    .err()
    .expect("an untrusted server is refused");
    assert!(
        error.starts_with(&format!(
            "cannot reach the Kubernetes API server (context kind-tls, server {}): ",
            api.url()
        )),
        "{error}"
    );
    assert!(error.contains("certificate"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(api.requests().is_empty(), "nothing was sent to it");
}

#[tokio::test]
async fn a_client_without_a_certificate_the_server_trusts_is_refused_in_one_line() {
    let pki = pki();
    let api = FakeApi::start_tls(Arc::new(pki.server)).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let error = connect(&options(kubeconfig(
        dir.path(),
        &api.url(),
        &pki.ca_pem,
        "{token: not-a-certificate}",
    )))
    .await
    .err()
    .expect("the server wants a client certificate");
    assert!(
        error.starts_with(&format!(
            "cannot reach the Kubernetes API server (context kind-tls, server {}): ",
            api.url()
        )),
        "{error}"
    );
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(api.requests().is_empty(), "no request got through");
}
