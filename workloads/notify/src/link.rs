//! Signed links in emails: confirm a subscription, unsubscribe from it.
//!
//! A link carries what it acts on (action, address, thread, scope) and an HMAC-SHA256 of it
//! under the site's notification secret, so the tier needs no table of issued links and a
//! link cannot be altered to act on someone else's address. Unsubscribe links never expire
//! (a mail client may use the `List-Unsubscribe` header months later); confirmation links do.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::outbox::Scope;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Confirms a subscription (double opt-in).
    Confirm,
    /// Withdraws a subscription.
    Unsubscribe,
    /// Approves a held comment (a moderator's link; works once, expires).
    Approve,
    /// Deletes a held comment (a moderator's link; works once, expires).
    Delete,
}

/// What a link acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The action.
    pub a: Action,
    /// The address.
    pub e: String,
    /// The thread.
    pub t: String,
    /// The scope; for a moderator's link, `Replies(id)` names the comment acted on.
    pub s: Scope,
    /// Expiry, Unix seconds; none for unsubscribe links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<i64>,
}

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a link this site issued, or altered.
    #[error("the link is not valid (altered, or not issued by this site)")]
    Invalid,
    /// Issued, but too old.
    #[error("the link has expired; subscribe again to get a new one")]
    Expired,
}

/// Signs and checks links.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Signer {
    /// A signer with this secret (at least 16 bytes).
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key size");
        mac.update(b"io360-notify-link\0");
        mac.update(payload);
        mac
    }

    /// The token for a claim: the claim, a dot, its MAC, both base64url.
    pub fn sign(&self, claim: &Claim) -> String {
        let payload = serde_json::to_vec(claim).expect("claims serialize");
        let tag = self.mac(&payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The claim of a token this signer issued, unaltered and unexpired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claim, LinkError> {
        let (p, t) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| LinkError::Invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(t).map_err(|_| LinkError::Invalid)?;
        self.mac(&payload)
            .verify_slice(&tag)
            .map_err(|_| LinkError::Invalid)?;
        let claim: Claim = serde_json::from_slice(&payload).map_err(|_| LinkError::Invalid)?;
        if claim.x.is_some_and(|x| x < now) {
            return Err(LinkError::Expired);
        }
        Ok(claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            a: Action::Unsubscribe,
            e: "reader@example.org".into(),
            t: "/post/1".into(),
            s: Scope::Replies(7),
            x: None,
        }
    }

    #[test]
    fn a_signed_link_verifies_and_an_altered_one_does_not() {
        let s = Signer::new(b"0123456789abcdef0123");
        let token = s.sign(&claim());
        assert_eq!(s.verify(&token, 0), Ok(claim()));
        let mut other = claim();
        other.e = "victim@example.org".into();
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap()),
            token.split_once('.').unwrap().1
        );
        assert_eq!(s.verify(&forged, 0), Err(LinkError::Invalid));
        assert_eq!(
            Signer::new(b"another secret of 16+").verify(&token, 0),
            Err(LinkError::Invalid)
        );
        assert_eq!(s.verify("garbage", 0), Err(LinkError::Invalid));
    }

    #[test]
    fn a_confirmation_link_expires() {
        let s = Signer::new(b"0123456789abcdef0123");
        let mut c = claim();
        c.a = Action::Confirm;
        c.x = Some(100);
        let token = s.sign(&c);
        assert!(s.verify(&token, 100).is_ok());
        assert_eq!(s.verify(&token, 101), Err(LinkError::Expired));
    }
}
