//! Personal data at rest: AES-256-GCM for values (bound to their row by
//! associated data) and a keyed HMAC-SHA256 blind index for lookups, both
//! derived from one configured master key.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::domain::IdentityKey;

const NONCE_LEN: usize = 12;

/// Keys for personal data.
#[derive(Clone)]
pub struct Pii {
    cipher: Aes256Gcm,
    index_key: Vec<u8>,
}

impl std::fmt::Debug for Pii {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pii(<keys>)")
    }
}

/// Decryption failed: wrong key or tampered data.
#[derive(Debug, thiserror::Error)]
#[error("personal data could not be decrypted")]
pub struct DecryptError;

fn derive(master: &[u8], purpose: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("hmac takes any key");
    mac.update(purpose);
    mac.finalize().into_bytes().to_vec()
}

impl Pii {
    /// Keys derived from a 32-byte master key.
    pub fn new(master: &[u8; 32]) -> Self {
        let enc = derive(master, b"laurel-member-encryption-v1");
        Self {
            cipher: Aes256Gcm::new_from_slice(&enc).expect("32-byte key"),
            index_key: derive(master, b"laurel-member-blind-index-v1"),
        }
    }

    /// Encrypts `plain`, bound to `context` (programme, member and field).
    pub fn seal(&self, plain: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("aes-gcm encryption does not fail for in-memory data");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Pii::seal`] made with the same context.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: data,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| DecryptError)
    }

    /// Encrypts text; empty stays empty (stored as NULL).
    pub fn seal_text(&self, plain: &str, context: &str) -> Option<Vec<u8>> {
        (!plain.is_empty()).then(|| self.seal(plain.as_bytes(), context))
    }

    /// Decrypts text made by [`Pii::seal_text`].
    pub fn open_text(&self, sealed: Option<&[u8]>, context: &str) -> Result<String, DecryptError> {
        match sealed {
            None => Ok(String::new()),
            Some(sealed) => {
                String::from_utf8(self.open(sealed, context)?).map_err(|_| DecryptError)
            }
        }
    }

    /// The blind index of an identity within a programme.
    pub fn identity_hash(&self, program: &str, identity: &IdentityKey) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.index_key).expect("hmac takes any key");
        for part in [
            program.as_bytes(),
            &identity.kind.code().to_be_bytes(),
            identity.namespace.as_bytes(),
            identity.value.as_bytes(),
        ] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdentityKind;

    #[test]
    fn sealed_data_opens_only_in_its_context() {
        let pii = Pii::new(&[7; 32]);
        let sealed = pii.seal(b"+4915112345678", "p/m/phone");
        assert_eq!(pii.open(&sealed, "p/m/phone").unwrap(), b"+4915112345678");
        assert!(pii.open(&sealed, "p/other/phone").is_err());
    }

    #[test]
    fn blind_index_depends_on_programme_and_key() {
        let id = IdentityKey {
            kind: IdentityKind::Email,
            namespace: String::new(),
            value: "a@b.c".into(),
        };
        let a = Pii::new(&[1; 32]);
        assert_eq!(a.identity_hash("p", &id), a.identity_hash("p", &id));
        assert_ne!(a.identity_hash("p", &id), a.identity_hash("q", &id));
        assert_ne!(
            a.identity_hash("p", &id),
            Pii::new(&[2; 32]).identity_hash("p", &id)
        );
    }
}
