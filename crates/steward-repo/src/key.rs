//! Key files (`keys/<id>`): the master key, encrypted with a key derived from a
//! password by scrypt.
//!
//! A key file is plain JSON (not encrypted, not compressed):
//! `{"created","username","hostname","kdf":"scrypt","N","r","p","salt","data"}`
//! where `salt` (64 random bytes) and `data` are base64. `data` decrypts, with the
//! scrypt-derived key, to the master key JSON. The file is named by the SHA-256 of
//! its bytes.

use chrono::{SecondsFormat, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::crypto::{KdfParams, MasterKey};
use crate::error::{Error, Result};
use crate::id::Id;

/// Salt length restic requires.
pub const SALT_LEN: usize = 64;

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The JSON of a key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// When the key was added (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// Who added it.
    #[serde(default)]
    pub username: String,
    /// On which host.
    #[serde(default)]
    pub hostname: String,
    /// Always `scrypt`.
    pub kdf: String,
    /// scrypt N.
    #[serde(rename = "N")]
    pub n: u64,
    /// scrypt r.
    pub r: u32,
    /// scrypt p.
    pub p: u32,
    /// The scrypt salt.
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// The encrypted master key JSON.
    #[serde(with = "b64")]
    pub data: Vec<u8>,
}

impl KeyFile {
    /// Encrypts `master` under `password` into a new key file; returns its bytes and id.
    pub fn create(
        master: &MasterKey,
        password: &str,
        params: KdfParams,
        username: &str,
        hostname: &str,
    ) -> Result<(Vec<u8>, Id)> {
        params.validate().map_err(Error::InvalidArgument)?;
        let mut salt = vec![0u8; SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        let user_key = params
            .derive(password.as_bytes(), &salt)
            .map_err(Error::InvalidArgument)?;
        let data = user_key.encrypt(&master.to_json());
        let kf = KeyFile {
            created: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
            username: username.to_string(),
            hostname: hostname.to_string(),
            kdf: "scrypt".into(),
            n: params.n,
            r: params.r,
            p: params.p,
            salt,
            data,
        };
        let bytes = serde_json::to_vec(&kf)
            .map_err(|e| Error::Aborted(format!("cannot encode key file: {e}")))?;
        let id = Id::hash(&bytes);
        Ok((bytes, id))
    }

    /// Parses a key file; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<KeyFile> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(what, format!("not a valid key file: {e}")))
    }

    /// Tries to open the master key with `password`. `Ok(None)` means the password
    /// does not fit this key file.
    pub fn open(&self, password: &str, what: &str) -> Result<Option<MasterKey>> {
        if self.kdf != "scrypt" {
            return Err(Error::Unsupported(format!(
                "{what} uses the key derivation function {:?}; only scrypt is supported",
                self.kdf
            )));
        }
        if self.salt.is_empty() || self.salt.len() > 1024 {
            return Err(Error::corrupt(
                what,
                format!("salt of {} bytes", self.salt.len()),
            ));
        }
        let params = KdfParams {
            n: self.n,
            r: self.r,
            p: self.p,
        };
        params
            .validate()
            .map_err(|e| Error::Unsupported(format!("{what}: {e}")))?;
        let user_key = params
            .derive(password.as_bytes(), &self.salt)
            .map_err(|e| Error::Unsupported(format!("{what}: {e}")))?;
        let Ok(plain) = user_key.decrypt(&self.data) else {
            return Ok(None);
        };
        let plain = zeroize::Zeroizing::new(plain);
        match MasterKey::from_json(&plain) {
            Some(k) => Ok(Some(k)),
            None => Err(Error::corrupt(
                what,
                "the password fits but the master key inside is not valid",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_open() {
        let master = MasterKey::random();
        let params = KdfParams {
            n: 1024,
            r: 8,
            p: 1,
        };
        let (bytes, id) = KeyFile::create(&master, "secret", params, "u", "h").unwrap();
        assert_eq!(id, Id::hash(&bytes));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"N\":1024"), "{text}");
        let kf = KeyFile::parse(&bytes, "k").unwrap();
        assert_eq!(kf.salt.len(), SALT_LEN);
        let opened = kf.open("secret", "k").unwrap().unwrap();
        let ct = master.encrypt(b"abc");
        assert_eq!(opened.decrypt(&ct).unwrap(), b"abc");
        assert!(kf.open("wrong", "k").unwrap().is_none());
        let mut hostile = kf.clone();
        hostile.n = 1 << 40;
        assert!(matches!(
            hostile.open("secret", "k"),
            Err(Error::Unsupported(_))
        ));
    }
}
