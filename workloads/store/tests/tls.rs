//! TLS to the database as the connection string asks it, against a real PostgreSQL started
//! with `ssl=on`, a certificate from a CA the test makes, and `hostssl` only in `pg_hba.conf`.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod support;

use io360_store::PgDb;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::pg::Postgres;

/// A CA: its certificate (PEM) and what signs with it.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for `names`, signed by `ca`: (certificate PEM, key PEM).
fn server_cert(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "io360 test database");
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn connect(url: String) -> Result<PgDb, String> {
    PgDb::connect(support::engines::pg_options(url, 8))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_connection_string_decides_how_the_database_is_trusted() {
    let ours = ca("io360 test CA");
    let theirs = ca("another CA");
    let (cert, key) = server_cert(&ours, &["127.0.0.1", "localhost"]);
    let pg = Postgres::start_tls(&cert, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("ours.pem"), dir.path().join("theirs.pem"));
    std::fs::write(&right, ours.pem()).unwrap();
    std::fs::write(&wrong, theirs.pem()).unwrap();
    let url = |params: &str| format!("{}&{params}", pg.url());

    // The right CA, the right name: connected, and the store works.
    let db = connect(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        right.display()
    )))
    .await
    .unwrap();
    assert_eq!(db.meta("/t".into()).await.unwrap().head, 0);
    db.close();

    // Another CA: refused, saying why.
    let err = connect(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        wrong.display()
    )))
    .await
    .err()
    .expect("a certificate from an unknown CA was accepted");
    assert!(err.contains("cannot reach the database"), "{err}");
    assert!(err.contains("certificate"), "{err}");
    let err = connect(url(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        wrong.display()
    )))
    .await
    .err()
    .expect("verify-ca accepted a certificate from an unknown CA");
    assert!(err.contains("certificate"), "{err}");

    // Plain text: the server's pg_hba.conf takes TCP connections over TLS only.
    let err = connect(url("sslmode=disable"))
        .await
        .err()
        .expect("a plain-text connection was let in by a hostssl-only server");
    assert!(err.contains("no encryption"), "{err}");

    // Encrypted without checking the certificate, as libpq's require and prefer do.
    connect(url("sslmode=require")).await.unwrap().close();
    connect(pg.url()).await.unwrap().close();

    // A CA file that is not one is named.
    let err = connect(url("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"))
        .await
        .err()
        .expect("a missing sslrootcert was ignored");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn verify_full_checks_the_name_and_verify_ca_does_not() {
    let ours = ca("io360 test CA");
    // A certificate for another host than the one connected to (127.0.0.1).
    let (cert, key) = server_cert(&ours, &["db.example.org"]);
    let pg = Postgres::start_tls(&cert, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("ours.pem");
    std::fs::write(&right, ours.pem()).unwrap();
    let url = |mode: &str| {
        format!(
            "{}&sslmode={mode}&sslrootcert={}",
            pg.url(),
            right.display()
        )
    };
    let err = connect(url("verify-full"))
        .await
        .err()
        .expect("verify-full accepted a certificate for another host");
    assert!(err.contains("certificate"), "{err}");
    connect(url("verify-ca")).await.unwrap().close();
    // require with a CA checks as verify-ca does.
    connect(url("require")).await.unwrap().close();
}
