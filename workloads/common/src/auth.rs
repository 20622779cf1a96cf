//! How io360's tiers know each other: a keyring, the credentials made from it, and the layer
//! that checks them on every internal route.
//!
//! A key is an id and 32 random bytes. A tier's credential for a key is
//! `io360.<tier>.<kid>.<mac>`, where `mac` is the unpadded base64url HMAC-SHA256, under the
//! key, of `"io360 tier credential v1\0" + tier`. A tier sends its credential in the
//! [`HEADER`] header on every call to another tier (a header of its own, not
//! `Authorization`, which on logic's routes belongs to the browser: edit and admin tokens). A
//! tier that is called holds the keyring, recomputes the MAC with the key the credential
//! names, compares in constant time, and then checks the tier is one allowed on the route.
//!
//! Both the credential and the keyring can come from files that are re-read when they change
//! (a Kubernetes Secret, whose mounted files kubelet swaps atomically), so keys rotate without
//! a restart; `io360 up` hands them over in memory instead. Neither is ever logged: the types
//! print as `<redacted>`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue, StatusCode};
use sha2::Sha256;

use crate::Problem;

/// The request header that carries a tier's credential.
pub const HEADER: HeaderName = HeaderName::from_static("io360-tier");

/// The scheme named in `WWW-Authenticate` when a credential is missing or wrong.
pub const SCHEME: &str = "Io360-Tier";

/// The tiers a credential may name.
pub const TIERS: [&str; 7] = [
    "frontend", "logic", "store", "sync", "longpoll", "logger", "notify",
];

/// How often a credential or keyring file is checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

const CONTEXT: &[u8] = b"io360 tier credential v1\0";
const KEY_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// One key of the keyring.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    id: String,
    secret: [u8; KEY_BYTES],
}

impl Key {
    /// A new random key named `id`.
    pub fn generate(id: &str) -> Result<Key, KeyringError> {
        check_kid(id)?;
        Ok(Key {
            id: id.to_owned(),
            secret: rand::random(),
        })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self, tier: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key size");
        mac.update(CONTEXT);
        mac.update(tier.as_bytes());
        mac
    }

    /// The credential of `tier` under this key.
    pub fn credential(&self, tier: &str) -> String {
        let mac = self.mac(tier).finalize().into_bytes();
        format!("io360.{tier}.{}.{}", self.id, URL_SAFE_NO_PAD.encode(mac))
    }

    /// The key as a line of a keyring file: `<kid> <base64url secret>`.
    pub fn to_line(&self) -> String {
        format!("{} {}", self.id, URL_SAFE_NO_PAD.encode(self.secret))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}, <redacted>)", self.id)
    }
}

/// Why a keyring or credential could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// A key id is empty, too long, or has characters other than `a-z`, `0-9` and `-`.
    #[error("key id `{0}` must be 1 to 32 of a-z, 0-9 and -")]
    BadId(String),
    /// A line is not `<kid> <base64url of 32 bytes>`.
    #[error("line {0} is not `<key id> <base64url of 32 random bytes>`")]
    BadLine(usize),
    /// Two keys have one id.
    #[error("key id `{0}` appears twice")]
    Duplicate(String),
    /// No key at all.
    #[error("the keyring holds no key")]
    Empty,
    /// The credential is not `io360.<tier>.<kid>.<mac>` for a known tier.
    #[error("the credential is not of the form io360.<tier>.<key id>.<mac>")]
    BadCredential,
}

fn check_kid(id: &str) -> Result<(), KeyringError> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyringError::BadId(id.to_owned()))
    }
}

/// The keys a verifying tier accepts: during a rotation, the old and the new one.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.id))
            .finish()
    }
}

impl Keyring {
    /// A keyring of these keys; the first is the one [`Keyring::credential`] signs with.
    pub fn new(keys: Vec<Key>) -> Result<Keyring, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyringError::Duplicate(k.id.clone()));
            }
        }
        Ok(Keyring { keys })
    }

    /// A keyring of one new random key, as `io360 up` makes at start.
    pub fn generate() -> Keyring {
        Keyring {
            keys: vec![Key::generate("k1").expect("a valid id")],
        }
    }

    /// Parses a keyring file: one `<kid> <base64url secret>` a line; blank lines and lines
    /// starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_ascii_whitespace();
            let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(KeyringError::BadLine(n + 1));
            };
            check_kid(id)?;
            let secret: [u8; KEY_BYTES] = URL_SAFE_NO_PAD
                .decode(secret)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(KeyringError::BadLine(n + 1))?;
            keys.push(Key {
                id: id.to_owned(),
                secret,
            });
        }
        Keyring::new(keys)
    }

    /// The keyring as a file [`Keyring::parse`] reads.
    pub fn to_text(&self) -> String {
        self.keys.iter().map(|k| k.to_line() + "\n").collect()
    }

    /// The keys, the signing one first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// `tier`'s credential under the first key.
    pub fn credential(&self, tier: &str) -> String {
        self.keys[0].credential(tier)
    }

    /// The tier a credential names, when one of these keys made it. Constant time in the MAC.
    pub fn verify(&self, credential: &str) -> Result<&'static str, KeyringError> {
        let mut parts = credential.split('.');
        let (Some("io360"), Some(tier), Some(kid), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(KeyringError::BadCredential);
        };
        let tier = TIERS
            .into_iter()
            .find(|t| *t == tier)
            .ok_or(KeyringError::BadCredential)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or(KeyringError::BadCredential)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| KeyringError::BadCredential)?;
        key.mac(tier)
            .verify_slice(&mac)
            .map_err(|_| KeyringError::BadCredential)?;
        Ok(tier)
    }
}

/// A value read from a file and read again when the file changes; or a fixed value.
struct Watched<T> {
    current: RwLock<Arc<T>>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    fn fixed(value: T) -> Arc<Watched<T>> {
        Arc::new(Watched {
            current: RwLock::new(Arc::new(value)),
        })
    }

    fn get(&self) -> Arc<T> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Reads `path` now (an error names `var`), then every `every` checks whether it changed
    /// and, when it did and still parses, takes the new value. The check stops when the last
    /// holder lets go.
    fn file(
        var: &'static str,
        path: &Path,
        every: Duration,
        parse: fn(&str) -> Result<T, KeyringError>,
    ) -> Result<Arc<Watched<T>>, String> {
        let read = move |path: &Path| -> Result<T, String> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{var}: cannot read {}: {e}", path.display()))?;
            parse(&text).map_err(|e| format!("{var}: {}: {e}", path.display()))
        };
        let first = read(path)?;
        let watched = Arc::new(Watched {
            current: RwLock::new(Arc::new(first)),
        });
        let weak: Weak<Watched<T>> = Arc::downgrade(&watched);
        let path: PathBuf = path.to_owned();
        let mut seen = stamp(&path);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(w) = weak.upgrade() else { return };
                    let now = stamp(&path);
                    if now == seen {
                        continue;
                    }
                    let path2 = path.clone();
                    match tokio::task::spawn_blocking(move || read(&path2)).await {
                        Ok(Ok(v)) => {
                            seen = now;
                            if let Ok(mut c) = w.current.write() {
                                *c = Arc::new(v);
                            }
                            tracing::info!(variable = var, "reloaded after a change");
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "kept the previous value");
                        }
                        Err(_) => {}
                    }
                }
            });
        }
        Ok(watched)
    }
}

/// What tells a file's contents changed: kubelet swaps a symlink, so the target's inode and
/// time change; an edit in place changes the time or the length.
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// This tier's own credential, sent on every call to another tier.
#[derive(Clone)]
pub struct Credential {
    value: Arc<Watched<HeaderValue>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

fn header_value(text: &str) -> Result<HeaderValue, KeyringError> {
    let mut v = HeaderValue::from_str(text.trim()).map_err(|_| KeyringError::BadCredential)?;
    if text.trim().split('.').count() != 4 || !text.trim().starts_with("io360.") {
        return Err(KeyringError::BadCredential);
    }
    v.set_sensitive(true);
    Ok(v)
}

impl Credential {
    /// A fixed credential.
    pub fn fixed(credential: &str) -> Result<Credential, KeyringError> {
        Ok(Credential {
            value: Watched::fixed(header_value(credential)?),
        })
    }

    /// `tier`'s credential made from `keyring`'s signing key.
    pub fn of(tier: &str, keyring: &Keyring) -> Credential {
        Credential::fixed(&keyring.credential(tier)).expect("a credential made here parses")
    }

    /// The credential in `path`, re-read when it changes. `var` names the setting in errors.
    pub fn from_file(var: &'static str, path: &Path) -> Result<Credential, String> {
        Credential::from_file_every(var, path, RELOAD_EVERY)
    }

    /// As [`Credential::from_file`], checking for a change every `every`.
    pub fn from_file_every(
        var: &'static str,
        path: &Path,
        every: Duration,
    ) -> Result<Credential, String> {
        Ok(Credential {
            value: Watched::file(var, path, every, header_value)?,
        })
    }

    /// The header value to send (marked sensitive, so it is never printed).
    pub fn header(&self) -> HeaderValue {
        (*self.value.get()).clone()
    }
}

/// The keyring a tier checks callers against.
#[derive(Clone)]
pub struct Verifier {
    keyring: Arc<Watched<Keyring>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({:?})", self.keyring.get())
    }
}

/// Why a call to an internal route was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential: 401.
    Missing,
    /// A credential no key of the keyring made, or malformed: 401.
    Invalid,
    /// A valid credential of a tier not allowed on the route: 403.
    NotAllowed {
        /// The calling tier.
        tier: &'static str,
        /// The tiers the route allows.
        allowed: &'static [&'static str],
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let unauthorized = |title: &str| {
            let mut res = Problem::new(StatusCode::UNAUTHORIZED, "tier-credential-required", title)
                .with_field(HEADER.as_str())
                .into_response();
            res.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(SCHEME),
            );
            res
        };
        match self {
            Refusal::Missing => {
                unauthorized("this route is internal to io360: a tier credential is required")
            }
            Refusal::Invalid => unauthorized("the tier credential is not valid"),
            Refusal::NotAllowed { tier, allowed } => Problem::new(
                StatusCode::FORBIDDEN,
                "tier-not-allowed",
                format!(
                    "the {tier} tier may not call this route (allowed: {})",
                    allowed.join(", ")
                ),
            )
            .into_response(),
        }
    }
}

/// The tier that made a request, once [`Verifier::guard`] let it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub &'static str);

impl Verifier {
    /// A verifier of a fixed keyring.
    pub fn fixed(keyring: Keyring) -> Verifier {
        Verifier {
            keyring: Watched::fixed(keyring),
        }
    }

    /// The keyring in `path`, re-read when it changes.
    pub fn from_file(var: &'static str, path: &Path) -> Result<Verifier, String> {
        Verifier::from_file_every(var, path, RELOAD_EVERY)
    }

    /// As [`Verifier::from_file`], checking for a change every `every`.
    pub fn from_file_every(
        var: &'static str,
        path: &Path,
        every: Duration,
    ) -> Result<Verifier, String> {
        Ok(Verifier {
            keyring: Watched::file(var, path, every, Keyring::parse)?,
        })
    }

    /// Which tier `headers` authenticate, or why the call is refused.
    pub fn check(
        &self,
        headers: &http::HeaderMap,
        allowed: &'static [&'static str],
    ) -> Result<Caller, Refusal> {
        let value = headers.get(&HEADER).ok_or(Refusal::Missing)?;
        let tier = value
            .to_str()
            .ok()
            .and_then(|v| self.keyring.get().verify(v.trim()).ok())
            .ok_or(Refusal::Invalid)?;
        if !allowed.contains(&tier) {
            return Err(Refusal::NotAllowed { tier, allowed });
        }
        Ok(Caller(tier))
    }

    /// `router`'s routes, open only to the `allowed` tiers: a missing or wrong credential is
    /// answered 401, another tier's 403. Unknown paths still answer 404 (a route layer), and
    /// the handlers find the calling tier as a [`Caller`] extension.
    pub fn guard<S: Clone + Send + Sync + 'static>(
        &self,
        allowed: &'static [&'static str],
        router: axum::Router<S>,
    ) -> axum::Router<S> {
        router.route_layer(axum::middleware::from_fn_with_state(
            (self.clone(), allowed),
            gate,
        ))
    }

    /// As [`Verifier::guard`], for the methods of one path (when methods of one path differ in
    /// who may call them).
    pub fn guard_method<S: Clone + Send + Sync + 'static>(
        &self,
        allowed: &'static [&'static str],
        route: axum::routing::MethodRouter<S>,
    ) -> axum::routing::MethodRouter<S> {
        route.route_layer(axum::middleware::from_fn_with_state(
            (self.clone(), allowed),
            gate,
        ))
    }
}

async fn gate(
    State((verifier, allowed)): State<(Verifier, &'static [&'static str])>,
    mut req: Request,
    next: Next,
) -> Response {
    match verifier.check(req.headers(), allowed) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Where a tier finds its credential and keyring: files named by `IO360_TIER_TOKEN_FILE` and
/// `IO360_TIER_KEYS_FILE`, or a keyring handed over in memory by `io360 up`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TierAuthConfig {
    /// File holding this tier's credential (`io360.<tier>.<key id>.<mac>`), sent on every call
    /// to another tier. Re-read when it changes, so keys rotate without a restart.
    #[arg(long = "tier-token-file", env = "IO360_TIER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// File holding the keyring (one `<key id> <base64url key>` a line) that callers'
    /// credentials are checked against. Re-read when it changes.
    #[arg(long = "tier-keys-file", env = "IO360_TIER_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,

    /// A keyring given in memory (`io360 up`, tests): the tier's credential is made from it
    /// and callers are checked against it; the files are then not read.
    #[arg(skip)]
    pub keyring: Option<Keyring>,
}

impl TierAuthConfig {
    /// A configuration from a keyring in memory.
    pub fn in_memory(keyring: &Keyring) -> TierAuthConfig {
        TierAuthConfig {
            keyring: Some(keyring.clone()),
            ..TierAuthConfig::default()
        }
    }

    /// `tier`'s own credential; an error names the variable to set.
    pub fn credential(&self, tier: &str) -> Result<Credential, String> {
        if let Some(k) = &self.keyring {
            return Ok(Credential::of(tier, k));
        }
        let path = self.token_file.as_deref().ok_or_else(|| {
            format!(
                "IO360_TIER_TOKEN_FILE (--tier-token-file) must name the file holding the \
                 {tier} tier's credential"
            )
        })?;
        Credential::from_file("IO360_TIER_TOKEN_FILE", path)
    }

    /// The verifier of callers; an error names the variable to set.
    pub fn verifier(&self, tier: &str) -> Result<Verifier, String> {
        if let Some(k) = &self.keyring {
            return Ok(Verifier::fixed(k.clone()));
        }
        let path = self.keys_file.as_deref().ok_or_else(|| {
            format!(
                "IO360_TIER_KEYS_FILE (--tier-keys-file) must name the file holding the keyring \
                 the {tier} tier checks its callers against"
            )
        })?;
        Verifier::from_file("IO360_TIER_KEYS_FILE", path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> Keyring {
        Keyring::new(ids.iter().map(|i| Key::generate(i).unwrap()).collect()).unwrap()
    }

    #[test]
    fn a_credential_names_its_tier_and_key_and_verifies() {
        let k = ring(&["k1"]);
        let c = k.credential("logic");
        assert!(c.starts_with("io360.logic.k1."), "{c}");
        assert_eq!(k.verify(&c), Ok("logic"));
    }

    #[test]
    fn a_credential_changed_anywhere_is_refused() {
        let k = ring(&["k1", "k2"]);
        let c = k.credential("logic");
        let mac = c.rsplit('.').next().unwrap();
        // Another tier's name over logic's MAC.
        assert!(k.verify(&format!("io360.store.k1.{mac}")).is_err());
        // Another key's id over k1's MAC.
        assert!(k.verify(&format!("io360.logic.k2.{mac}")).is_err());
        // An unknown key id, an unknown tier.
        assert!(k.verify(&format!("io360.logic.k9.{mac}")).is_err());
        assert!(k.verify(&format!("io360.admin.k1.{mac}")).is_err());
        // Truncated, padded, empty.
        assert!(k.verify(&c[..c.len() - 1]).is_err());
        assert!(k.verify(&format!("{c}A")).is_err());
        assert!(k.verify(&format!("io360.logic.k1.{}", &mac[..8])).is_err());
        assert!(k.verify("io360.logic.k1.").is_err());
        assert!(k.verify("").is_err());
        assert!(k.verify(&format!("{c}.x")).is_err());
        // Another keyring's credential, even with the same key ids.
        assert!(k.verify(&ring(&["k1"]).credential("logic")).is_err());
    }

    #[test]
    fn a_previous_key_is_accepted_while_in_the_keyring_and_refused_once_removed() {
        let old = Key::generate("k1").unwrap();
        let new = Key::generate("k2").unwrap();
        let during = Keyring::new(vec![new.clone(), old.clone()]).unwrap();
        let cred = old.credential("sync");
        assert_eq!(during.verify(&cred), Ok("sync"));
        assert_eq!(during.verify(&new.credential("sync")), Ok("sync"));
        let after = Keyring::new(vec![new]).unwrap();
        assert!(after.verify(&cred).is_err());
    }

    #[test]
    fn a_keyring_file_reads_back_and_bad_files_say_what_is_wrong() {
        let k = ring(&["a", "b-2"]);
        assert_eq!(Keyring::parse(&k.to_text()).unwrap(), k);
        assert_eq!(Keyring::parse("# none\n\n"), Err(KeyringError::Empty));
        assert_eq!(Keyring::parse("k1 short"), Err(KeyringError::BadLine(1)));
        assert!(matches!(
            Keyring::parse("K.1 AAAA"),
            Err(KeyringError::BadId(_))
        ));
        let line = Key::generate("x").unwrap().to_line();
        assert_eq!(
            Keyring::parse(&format!("{line}\n{line}\n")),
            Err(KeyringError::Duplicate("x".into()))
        );
    }

    #[test]
    fn nothing_secret_prints() {
        let k = ring(&["k1"]);
        let secret = URL_SAFE_NO_PAD.encode(k.keys[0].secret);
        let cred = Credential::of("logic", &k);
        let text = format!(
            "{k:?} {:?} {cred:?} {:?}",
            k.keys[0],
            Verifier::fixed(k.clone())
        );
        assert!(!text.contains(&secret), "{text}");
        assert!(!text.contains(k.credential("logic").rsplit('.').next().unwrap()));
        assert!(cred.header().is_sensitive());
    }

    #[test]
    fn the_check_answers_401_without_a_credential_and_403_for_a_tier_not_allowed() {
        let k = ring(&["k1"]);
        let v = Verifier::fixed(k.clone());
        let mut h = http::HeaderMap::new();
        assert_eq!(v.check(&h, &["logic"]), Err(Refusal::Missing));
        let res = v.check(&h, &["logic"]).unwrap_err().into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()[http::header::WWW_AUTHENTICATE], SCHEME);
        h.insert(HEADER, HeaderValue::from_static("io360.logic.k1.AAAA"));
        assert_eq!(v.check(&h, &["logic"]), Err(Refusal::Invalid));
        h.insert(HEADER, Credential::of("sync", &k).header());
        let refusal = v.check(&h, &["logic"]).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::NotAllowed {
                tier: "sync",
                allowed: &["logic"]
            }
        );
        assert_eq!(refusal.into_response().status(), StatusCode::FORBIDDEN);
        assert_eq!(v.check(&h, &["logic", "sync"]).unwrap(), Caller("sync"));
    }

    #[tokio::test]
    async fn files_are_read_again_when_they_change_and_a_bad_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let old = ring(&["k1"]);
        std::fs::write(&keys, old.to_text()).unwrap();
        let v = Verifier::from_file_every("IO360_TIER_KEYS_FILE", &keys, Duration::from_millis(20))
            .unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, Credential::of("logic", &old).header());
        assert!(v.check(&h, &["logic"]).is_ok());
        // As kubelet does: a new file swapped into place.
        let new = ring(&["k2"]);
        let tmp = dir.path().join("keys.new");
        std::fs::write(&tmp, new.to_text()).unwrap();
        std::fs::rename(&tmp, &keys).unwrap();
        let mut refused = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if v.check(&h, &["logic"]).is_err() {
                refused = true;
                break;
            }
        }
        assert!(
            refused,
            "the old key was still accepted after the file changed"
        );
        std::fs::write(&keys, "not a keyring").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.insert(HEADER, Credential::of("logic", &new).header());
        assert!(
            v.check(&h, &["logic"]).is_ok(),
            "a bad file replaced a good keyring"
        );
    }

    #[test]
    fn a_missing_file_setting_is_named() {
        let c = TierAuthConfig::default();
        assert!(
            c.credential("store")
                .unwrap_err()
                .contains("IO360_TIER_TOKEN_FILE")
        );
        assert!(
            c.verifier("store")
                .unwrap_err()
                .contains("IO360_TIER_KEYS_FILE")
        );
        let dir = tempfile::tempdir().unwrap();
        let c = TierAuthConfig {
            token_file: Some(dir.path().join("absent")),
            ..TierAuthConfig::default()
        };
        let e = c.credential("store").unwrap_err();
        assert!(
            e.contains("IO360_TIER_TOKEN_FILE") && e.contains("absent"),
            "{e}"
        );
    }
}
