//! Personal data: sealed values at rest (bound to their row by associated
//! data), a separately keyed seal for the member card in Redis, and keyed
//! HMAC-SHA256 digests for lookups (the identity blind index) and for
//! comparing replayed activity requests. Every key is derived from a keyring
//! of master keys.
//!
//! # Ciphertext format
//!
//! `[format = 1][key id length n][n bytes key id][24-byte nonce][ciphertext and 16-byte tag]`
//!
//! The header names the master key that sealed the value, so any key of the
//! ring opens it. The header and the caller's context are the associated
//! data: a value moved to another row, or relabelled with another key id,
//! does not open.
//!
//! # Why XChaCha20-Poly1305
//!
//! AES-GCM's 96-bit nonces, drawn at random, must stay under about 2^32
//! seals per key before a nonce collision (which leaks the authentication
//! key) becomes a real risk; a busy card cache passes that in weeks.
//! XChaCha20-Poly1305 takes 192-bit nonces, so random nonces stay safe: after
//! 2^48 seals under one key the chance of any collision is about 2^-97.
//!
//! # Keys and rotation
//!
//! `LAUREL_PII_KEYS` is `id:base64,id:base64,...` (32 bytes each). The first
//! key seals; every key opens. `LAUREL_PII_KEY` (one base64 key) is accepted
//! as a ring of one key with the id [`SINGLE_KEY_ID`].
//!
//! To rotate: generate a key, put it FIRST in `LAUREL_PII_KEYS` and keep the
//! older keys after it, roll the deployment; from then on new values are
//! sealed with the new key and old ones still open. An old key may be
//! dropped only once nothing sealed under it remains; a pass that re-seals
//! old rows is future work, so for now old keys stay in the ring.
//!
//! Values sealed before key ids existed (AES-256-GCM, a random 96-bit nonce
//! and no header) still open under any key of the ring; they are re-sealed
//! in the new format whenever their row is written again.
//!
//! The blind index and request digests are keyed from the LAST key of the
//! ring (the oldest), because their values must stay stable to be found:
//! rotating that key needs a re-index pass (future work), so new keys are
//! always added at the front.

use aes_gcm::Aes256Gcm;
use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::domain::IdentityKey;

/// Version byte that starts every ciphertext.
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;
const MAX_KEY_ID_LEN: usize = 32;

/// Id of the key given by the single-key variable `LAUREL_PII_KEY`.
pub const SINGLE_KEY_ID: &str = "default";

/// One master key and its id.
#[derive(Clone)]
struct MasterKey {
    id: String,
    secret: [u8; 32],
}

/// The configured master keys; the first seals, all open.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A ring of one key with the id [`SINGLE_KEY_ID`].
    pub fn single(secret: [u8; 32]) -> Self {
        Self {
            keys: vec![MasterKey {
                id: SINGLE_KEY_ID.to_owned(),
                secret,
            }],
        }
    }

    /// Parses `id:base64,id:base64`; the reason names what is wrong but never
    /// repeats a key.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((id, secret)) = entry.split_once(':') else {
                return Err("each entry must be id:base64".into());
            };
            let id = id.trim();
            if !valid_key_id(id) {
                return Err(format!(
                    "key id {id:?} must be 1 to {MAX_KEY_ID_LEN} of A-Z, a-z, 0-9, '-', '_', '.'"
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("key id {id:?} appears twice"));
            }
            let secret = decode_key(secret)
                .ok_or_else(|| format!("key {id:?} must be base64 of exactly 32 bytes"))?;
            keys.push(MasterKey {
                id: id.to_owned(),
                secret,
            });
        }
        if keys.is_empty() {
            return Err("no keys".into());
        }
        Ok(Self { keys })
    }

    /// The key ids, the sealing key first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Key of the blind index and request digests: the oldest, last key.
    fn index_root(&self) -> &MasterKey {
        self.keys.last().expect("a keyring is never empty")
    }
}

/// A 32-byte key from base64.
pub fn decode_key(raw: &str) -> Option<[u8; 32]> {
    STANDARD
        .decode(raw.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
}

fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Decryption failed: unknown key, wrong context or tampered data.
#[derive(Debug, thiserror::Error)]
#[error("personal data could not be decrypted")]
pub struct DecryptError;

fn derive(master: &[u8], purpose: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("hmac takes any key");
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

/// Seals and opens for one purpose, under keys derived from each master key.
#[derive(Clone)]
struct Sealer {
    /// (key id, cipher); the first seals.
    keys: Vec<(String, XChaCha20Poly1305)>,
    /// Ciphers of the format before key ids, to open old values only.
    legacy: Vec<Aes256Gcm>,
}

/// Nonce length of the format before key ids.
const LEGACY_NONCE_LEN: usize = 12;

impl Sealer {
    fn new(ring: &Keyring, purpose: &[u8]) -> Self {
        let keys = ring
            .keys
            .iter()
            .map(|k| {
                let key = derive(&k.secret, purpose);
                (
                    k.id.clone(),
                    XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key"),
                )
            })
            .collect();
        Self {
            keys,
            legacy: Vec::new(),
        }
    }

    /// Also opens values sealed before key ids under `purpose`.
    fn opening_legacy(mut self, ring: &Keyring, purpose: &[u8]) -> Self {
        self.legacy = ring
            .keys
            .iter()
            .map(|k| Aes256Gcm::new_from_slice(&derive(&k.secret, purpose)).expect("32-byte key"))
            .collect();
        self
    }

    fn open_legacy(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < LEGACY_NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, data) = sealed.split_at(LEGACY_NONCE_LEN);
        self.legacy
            .iter()
            .find_map(|cipher| {
                cipher
                    .decrypt(
                        aes_gcm::Nonce::from_slice(nonce),
                        Payload {
                            msg: data,
                            aad: context.as_bytes(),
                        },
                    )
                    .ok()
            })
            .ok_or(DecryptError)
    }

    fn seal(&self, plain: &[u8], context: &str) -> Vec<u8> {
        let (id, cipher) = &self.keys[0];
        let mut out = Vec::with_capacity(2 + id.len() + NONCE_LEN + plain.len() + 16);
        out.push(FORMAT);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        let header_len = out.len();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(&out, context);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("encryption does not fail for in-memory data");
        debug_assert_eq!(out.len(), header_len);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, DecryptError> {
        // An old value's random nonce may start like a header: authentication
        // tells the formats apart.
        self.open_current(sealed, context)
            .or_else(|_| self.open_legacy(sealed, context))
    }

    fn open_current(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, DecryptError> {
        let (&format, rest) = sealed.split_first().ok_or(DecryptError)?;
        let (&id_len, rest) = rest.split_first().ok_or(DecryptError)?;
        let id_len = usize::from(id_len);
        if format != FORMAT || rest.len() < id_len + NONCE_LEN {
            return Err(DecryptError);
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, data) = rest.split_at(NONCE_LEN);
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k.as_bytes() == id)
            .ok_or(DecryptError)?;
        let aad = associated_data(&sealed[..2 + id_len], context);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: data,
                    aad: &aad,
                },
            )
            .map_err(|_| DecryptError)
    }
}

fn associated_data(header: &[u8], context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// Keys for personal data.
#[derive(Clone)]
pub struct Pii {
    at_rest: Sealer,
    card: Sealer,
    index_key: [u8; 32],
    digest_key: [u8; 32],
}

impl std::fmt::Debug for Pii {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pii(<keys>)")
    }
}

impl Pii {
    /// Keys derived from a keyring.
    pub fn new(ring: &Keyring) -> Self {
        let root = &ring.index_root().secret;
        Self {
            at_rest: Sealer::new(ring, b"laurel-member-encryption-v2")
                .opening_legacy(ring, b"laurel-member-encryption-v1"),
            card: Sealer::new(ring, b"laurel-member-card-v1"),
            index_key: derive(root, b"laurel-member-blind-index-v1"),
            digest_key: derive(root, b"laurel-member-request-digest-v1"),
        }
    }

    /// Encrypts `plain` for storage, bound to `context` (programme, member
    /// and field).
    pub fn seal(&self, plain: &[u8], context: &str) -> Vec<u8> {
        self.at_rest.seal(plain, context)
    }

    /// Decrypts what [`Pii::seal`] made with the same context, under any key
    /// of the ring.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, DecryptError> {
        self.at_rest.open(sealed, context)
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

    /// Encrypts a member card for Redis under the card's own key, so a
    /// value read from the cache can never be replayed into storage.
    pub fn seal_card(&self, plain: &[u8], cache_key: &str) -> Vec<u8> {
        self.card.seal(plain, cache_key)
    }

    /// Decrypts what [`Pii::seal_card`] made for the same cache key.
    pub fn open_card(&self, sealed: &[u8], cache_key: &str) -> Result<Vec<u8>, DecryptError> {
        self.card.open(sealed, cache_key)
    }

    /// The blind index of an identity within a programme.
    pub fn identity_hash(&self, program: &str, identity: &IdentityKey) -> Vec<u8> {
        keyed_digest(
            &self.index_key,
            &[
                program.as_bytes(),
                &identity.kind.code().to_be_bytes(),
                identity.namespace.as_bytes(),
                identity.value.as_bytes(),
            ],
        )
    }

    /// The key of the runtime's idempotency digests: stored request digests
    /// may cover identities, so they are keyed, never plain hashes.
    pub fn request_digest_key(&self) -> [u8; 32] {
        derive(&self.digest_key, b"laurel-idempotency-digest-v1")
    }

    /// A keyed digest of a request within a programme, compared when a
    /// request is replayed; unlike a plain hash it cannot be used to guess
    /// the phone number or email the request held.
    pub fn request_digest(&self, program: &str, request: &[u8]) -> Vec<u8> {
        keyed_digest(&self.digest_key, &[program.as_bytes(), request])
    }
}

fn keyed_digest(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key");
    for part in parts {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;
    use crate::domain::IdentityKind;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn sealed_data_opens_only_in_its_context() {
        let pii = Pii::new(&Keyring::single([7; 32]));
        let sealed = pii.seal(b"+4915112345678", "p/m/phone");
        assert_eq!(pii.open(&sealed, "p/m/phone").unwrap(), b"+4915112345678");
        assert!(pii.open(&sealed, "p/other/phone").is_err());
    }

    #[test]
    fn ciphertexts_name_their_key() {
        let pii = Pii::new(&Keyring::parse(&format!("k2:{},k1:{}", key(2), key(1))).unwrap());
        let sealed = pii.seal(b"x", "c");
        assert_eq!(sealed[0], FORMAT);
        assert_eq!(&sealed[1..4], b"\x02k2");
    }

    #[test]
    fn a_value_sealed_under_an_old_key_opens_after_rotation() {
        let old = Pii::new(&Keyring::parse(&format!("k1:{}", key(1))).unwrap());
        let sealed = old.seal(b"Ada", "p/m/given_name");
        let card = old.seal_card(b"card", "card-key");
        let rotated = Pii::new(&Keyring::parse(&format!("k2:{},k1:{}", key(2), key(1))).unwrap());
        assert_eq!(rotated.open(&sealed, "p/m/given_name").unwrap(), b"Ada");
        assert_eq!(rotated.open_card(&card, "card-key").unwrap(), b"card");
        let resealed = rotated.seal(b"Ada", "p/m/given_name");
        assert_eq!(&resealed[2..4], b"k2");
        // The old ring alone cannot open what the new key sealed.
        assert!(old.open(&resealed, "p/m/given_name").is_err());
        // Lookups keep working: the index is keyed from the oldest key.
        let id = IdentityKey {
            kind: IdentityKind::Email,
            namespace: String::new(),
            value: "a@b.c".into(),
        };
        assert_eq!(old.identity_hash("p", &id), rotated.identity_hash("p", &id));
    }

    #[test]
    fn values_sealed_before_key_ids_still_open() {
        let master = [7u8; 32];
        let legacy =
            Aes256Gcm::new_from_slice(&derive(&master, b"laurel-member-encryption-v1")).unwrap();
        let nonce = [3u8; LEGACY_NONCE_LEN];
        let mut sealed = nonce.to_vec();
        sealed.extend(
            legacy
                .encrypt(
                    aes_gcm::Nonce::from_slice(&nonce),
                    Payload {
                        msg: b"Ada",
                        aad: b"p/m/given_name",
                    },
                )
                .unwrap(),
        );
        let pii = Pii::new(&Keyring::single(master));
        assert_eq!(pii.open(&sealed, "p/m/given_name").unwrap(), b"Ada");
        assert!(pii.open(&sealed, "p/other/given_name").is_err());
        assert!(pii.open_card(&sealed, "p/m/given_name").is_err());
    }

    #[test]
    fn a_relabelled_key_id_does_not_open() {
        let pii = Pii::new(&Keyring::parse(&format!("k1:{},k2:{}", key(1), key(1))).unwrap());
        let mut sealed = pii.seal(b"Ada", "c");
        sealed[3] = b'2';
        assert!(pii.open(&sealed, "c").is_err());
    }

    #[test]
    fn the_card_key_is_not_the_storage_key() {
        let pii = Pii::new(&Keyring::single([7; 32]));
        let card = pii.seal_card(b"card", "k");
        assert!(pii.open(&card, "k").is_err());
        let stored = pii.seal(b"row", "k");
        assert!(pii.open_card(&stored, "k").is_err());
        assert_eq!(pii.open_card(&card, "k").unwrap(), b"card");
    }

    #[test]
    fn nonces_are_fresh() {
        let pii = Pii::new(&Keyring::single([7; 32]));
        assert_ne!(pii.seal(b"same", "c"), pii.seal(b"same", "c"));
    }

    #[test]
    fn keyrings_refuse_bad_entries_without_echoing_keys() {
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("nokey").is_err());
        assert!(Keyring::parse(&format!("k1:{},k1:{}", key(1), key(2))).is_err());
        assert!(Keyring::parse(&format!("bad id:{}", key(1))).is_err());
        let short = STANDARD.encode([1u8; 16]);
        let error = Keyring::parse(&format!("k1:{short}")).unwrap_err();
        assert!(!error.contains(&short));
        let ring = Keyring::parse(&format!("k1:{}", key(9))).unwrap();
        assert!(!format!("{ring:?}").contains(&key(9)));
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k1"]);
    }

    #[test]
    fn blind_index_depends_on_programme_and_key() {
        let id = IdentityKey {
            kind: IdentityKind::Email,
            namespace: String::new(),
            value: "a@b.c".into(),
        };
        let a = Pii::new(&Keyring::single([1; 32]));
        assert_eq!(a.identity_hash("p", &id), a.identity_hash("p", &id));
        assert_ne!(a.identity_hash("p", &id), a.identity_hash("q", &id));
        assert_ne!(
            a.identity_hash("p", &id),
            Pii::new(&Keyring::single([2; 32])).identity_hash("p", &id)
        );
    }

    #[test]
    fn request_digests_are_keyed() {
        let a = Pii::new(&Keyring::single([1; 32]));
        let plain = sha2::Sha256::digest(b"request").to_vec();
        assert_ne!(a.request_digest("p", b"request"), plain);
        assert_eq!(
            a.request_digest("p", b"request"),
            a.request_digest("p", b"request")
        );
        assert_ne!(
            a.request_digest("p", b"request"),
            Pii::new(&Keyring::single([2; 32])).request_digest("p", b"request")
        );
    }
}
