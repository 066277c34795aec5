//! Secret values at rest: secret environment values and secret headers are sealed with
//! XChaCha20-Poly1305 before a job is stored and opened only when an attempt runs, so the
//! database (and its backups) never hold them in clear.
//!
//! Keys are 32 random bytes written as 64 hex digits. A key ring lists one or more,
//! separated by whitespace or commas: the first seals, every one opens, which is how a key
//! is rotated (put the new key first, keep the old one until the jobs it sealed are gone).
//! A value stored before sealing was configured is read as it is.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use retryd_core::Action;

/// Marks a sealed value: the nonce and the ciphertext follow, in hex.
pub const SEALED_PREFIX: &str = "rtdsealed:v1:";
const NONCE_BYTES: usize = 24;

/// The key ring.
#[derive(Clone)]
pub struct SecretKeys {
    keys: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for SecretKeys {
    /// Never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKeys({} keys)", self.keys.len())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

impl SecretKeys {
    /// A key ring as written in `RETRYD_SECRET_KEY` or a key file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let keys = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|k| !k.is_empty())
            .map(|k| match unhex(k) {
                Some(bytes) if bytes.len() == 32 => {
                    Ok(XChaCha20Poly1305::new(Key::from_slice(&bytes)))
                }
                _ => Err("a secret key is 64 hex digits (32 bytes); generate one with `openssl rand -hex 32`".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no secret key given".into());
        }
        Ok(SecretKeys { keys })
    }

    /// A new random key, as a key file holds it.
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        hex(&key)
    }

    fn seal_value(&self, plain: &str) -> Result<String, String> {
        if plain.starts_with(SEALED_PREFIX) {
            return Ok(plain.to_owned());
        }
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self.keys[0]
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .map_err(|_| "a secret value could not be sealed".to_owned())?;
        Ok(format!("{SEALED_PREFIX}{}{}", hex(&nonce), hex(&sealed)))
    }

    fn open_value(&self, stored: &str) -> Result<String, String> {
        let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let bytes = unhex(sealed)
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or("a sealed secret value is damaged")?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        self.keys
            .iter()
            .find_map(|key| key.decrypt(XNonce::from_slice(nonce), ciphertext).ok())
            .and_then(|plain| String::from_utf8(plain).ok())
            .ok_or_else(|| {
                "a secret value was sealed with a key that is not configured \
                 (RETRYD_SECRET_KEY or --secret-key-file)"
                    .to_owned()
            })
    }

    /// The action with its secret values sealed, for storage.
    pub fn seal(&self, action: &mut Action) -> Result<(), String> {
        action.try_map_secrets(&mut |value| self.seal_value(value))
    }

    /// The action with its secret values opened, for a run.
    pub fn open(&self, action: &mut Action) -> Result<(), String> {
        action.try_map_secrets(&mut |value| self.open_value(value))
    }
}

/// Opens with `keys` when there are some; without, a sealed value cannot be opened.
pub fn open(keys: Option<&SecretKeys>, action: &mut Action) -> Result<(), String> {
    match keys {
        Some(keys) => keys.open(action),
        None => action.try_map_secrets(&mut |value| {
            if value.starts_with(SEALED_PREFIX) {
                Err("a secret value is sealed but no secret key is configured (RETRYD_SECRET_KEY or --secret-key-file)".into())
            } else {
                Ok(value.to_owned())
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retryd_core::job::{CommandAction, EnvValue};

    fn action_with_secret(value: &str) -> Action {
        Action::Command(CommandAction {
            program: "deploy".into(),
            args: vec![],
            cwd: None,
            env: [(
                "TOKEN".to_owned(),
                EnvValue::Marked {
                    value: value.into(),
                    secret: true,
                },
            )]
            .into(),
            stdin: None,
            timeout: None,
        })
    }

    fn secret_of(action: &Action) -> String {
        match action {
            Action::Command(c) => c.env["TOKEN"].value().to_owned(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn sealed_values_open_with_the_ring_and_rotation_keeps_old_keys_readable() {
        let old = SecretKeys::generate();
        let new = SecretKeys::generate();
        let mut action = action_with_secret("tok-123");
        SecretKeys::parse(&old).unwrap().seal(&mut action).unwrap();
        let stored = secret_of(&action);
        assert!(stored.starts_with(SEALED_PREFIX) && !stored.contains("tok-123"));

        let rotated = SecretKeys::parse(&format!("{new},{old}")).unwrap();
        let mut opened = action.clone();
        rotated.open(&mut opened).unwrap();
        assert_eq!(secret_of(&opened), "tok-123");

        let without_old = SecretKeys::parse(&new).unwrap();
        assert!(without_old.open(&mut action.clone()).is_err());
        assert!(open(None, &mut action.clone()).is_err());
        assert!(SecretKeys::parse("not-hex").is_err());
    }
}
