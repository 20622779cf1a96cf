//! Edit tokens and private keys derived from the server's signing key.
//!
//! An edit token is `<id>.<expiry>.<mac>`, where the MAC (HMAC-SHA256 over id and expiry)
//! proves the server issued it: nobody can forge one or stretch its window. Voter and author
//! keys are MACs too, so the store never holds a raw address or email as a key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Why an edit token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this server made, or for another comment.
    #[error("the edit token is not valid for this comment")]
    Invalid,
    /// Valid, but the edit window has passed.
    #[error("the edit window for this comment has closed")]
    Expired,
}

/// The server's signing key.
#[derive(Clone)]
pub struct Keys {
    key: Vec<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Keys from a secret; every replica given the same secret agrees.
    pub fn new(secret: &[u8]) -> Self {
        let key = Sha256::digest([b"io360 signing key:".as_slice(), secret].concat()).to_vec();
        Keys { key }
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        for p in parts {
            m.update(p);
            m.update(b"\0");
        }
        m
    }

    /// An opaque, stable key for `purpose` and `value` (a voter's address, an author's email).
    pub fn derive(&self, purpose: &str, value: &str) -> String {
        let out = self.mac(&[purpose.as_bytes(), value.as_bytes()]).finalize();
        URL_SAFE_NO_PAD.encode(&out.into_bytes()[..16])
    }

    /// The author key of a comment written with `email` (lowercased), the key an erase or
    /// export by email looks for.
    pub fn author_of_email(&self, email: &str) -> String {
        self.derive("author-email", &email.to_lowercase())
    }

    /// A token that lets its holder edit comment `id` until `expires` (unix seconds).
    pub fn edit_token(&self, id: u64, expires: i64) -> String {
        let mac = self
            .mac(&[
                b"edit",
                id.to_string().as_bytes(),
                expires.to_string().as_bytes(),
            ])
            .finalize();
        format!(
            "{id}.{expires}.{}",
            URL_SAFE_NO_PAD.encode(mac.into_bytes())
        )
    }

    /// Checks an edit token for comment `id` at time `now` (unix seconds).
    pub fn verify_edit(&self, token: &str, id: u64, now: i64) -> Result<(), TokenError> {
        let mut parts = token.splitn(3, '.');
        let (Some(tid), Some(exp), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Invalid);
        };
        if tid != id.to_string() {
            return Err(TokenError::Invalid);
        }
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Invalid)?;
        self.mac(&[b"edit", tid.as_bytes(), exp.as_bytes()])
            .verify_slice(&mac)
            .map_err(|_| TokenError::Invalid)?;
        let exp: i64 = exp.parse().map_err(|_| TokenError::Invalid)?;
        if now > exp {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_comment_and_window() {
        let k = Keys::new(b"secret");
        let t = k.edit_token(7, 1000);
        assert_eq!(k.verify_edit(&t, 7, 999), Ok(()));
        assert_eq!(k.verify_edit(&t, 7, 1001), Err(TokenError::Expired));
        assert_eq!(k.verify_edit(&t, 8, 999), Err(TokenError::Invalid));
        let forged = t.replace(".1000.", ".9999.");
        assert_eq!(k.verify_edit(&forged, 7, 999), Err(TokenError::Invalid));
        let other = Keys::new(b"other").edit_token(7, 1000);
        assert_eq!(k.verify_edit(&other, 7, 999), Err(TokenError::Invalid));
        assert_eq!(k.verify_edit("garbage", 7, 0), Err(TokenError::Invalid));
    }
}
