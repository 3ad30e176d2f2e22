//! SSH keys: the environment's client key and each VM's host key (ed25519).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

/// Why a key could not be made or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Hashing a password failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// Generating or encoding a key failed.
    #[error("cannot generate an ed25519 key")]
    Generate(#[source] ssh_key::Error),
    /// Writing the key file failed.
    #[error("cannot write key {}", path.display())]
    Write {
        /// The private key file, or the `.pub` file beside it.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the key file failed.
    #[error("cannot read key {}", path.display())]
    Read {
        /// The key file that could not be read.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// An ed25519 key pair in OpenSSH encodings.
#[derive(Clone)]
pub struct KeyPair {
    /// Private key, OpenSSH PEM.
    pub private_openssh: String,
    /// Public key, `ssh-ed25519 AAAA… comment`.
    pub public_openssh: String,
    /// Public key in SSH wire encoding (what a server presents as its host key).
    pub public_blob: Vec<u8>,
    /// Private key in dropbear's key-file format (saves the `tiny` guest a conversion at boot).
    pub private_dropbear: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh ed25519 key pair with `comment`.
    pub fn generate(comment: &str) -> Result<Self, KeyError> {
        let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(KeyError::Generate)?;
        key.set_comment(comment);
        let private_openssh = key.to_openssh(LineEnding::LF).map_err(KeyError::Generate)?.to_string();
        let public = key.public_key();
        let pair = key.key_data().ed25519().map(|k| k.to_bytes()).unwrap_or([0; 64]);
        Ok(KeyPair {
            private_openssh,
            public_openssh: public.to_openssh().map_err(KeyError::Generate)?,
            public_blob: public.to_bytes().map_err(KeyError::Generate)?,
            private_dropbear: dropbear_ed25519(&pair),
        })
    }

    /// Writes the private key to the new file `path` (mode 0600) and the public
    /// one to `path.pub`; existing files and links are never written through.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        // New files only, never through a link: a link planted at `path`
        // (to /etc/shadow, say) must not be truncated by a root process.
        let new_file = |p: &Path, mode: u32| {
            fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(mode)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(p)
        };
        let mut f = new_file(path, 0o600).map_err(err)?;
        f.write_all(self.private_openssh.as_bytes()).map_err(err)?;
        let pub_path = path.with_extension("pub");
        new_file(&pub_path, 0o644)
            .and_then(|mut f| f.write_all(format!("{}\n", self.public_openssh).as_bytes()))
            .map_err(|source| KeyError::Write { path: pub_path, source })
    }
}

/// Dropbear's ed25519 key file: the SSH strings `ssh-ed25519` and the
/// 64-byte private seed + public key (what `dropbearconvert` writes).
fn dropbear_ed25519(pair: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(83);
    out.extend_from_slice(&11u32.to_be_bytes());
    out.extend_from_slice(b"ssh-ed25519");
    out.extend_from_slice(&64u32.to_be_bytes());
    out.extend_from_slice(pair);
    out
}

/// The SSH wire encoding of an OpenSSH public key line (`ssh-ed25519 AAAA…`).
pub fn public_blob(openssh: &str) -> Option<Vec<u8>> {
    let key = ssh_key::PublicKey::from_openssh(openssh.trim()).ok()?;
    key.to_bytes().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_ed25519_and_written_0600() {
        let k = KeyPair::generate("lago-test").unwrap();
        assert!(k.private_openssh.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(k.public_openssh.starts_with("ssh-ed25519 "));
        assert!(k.public_openssh.ends_with(" lago-test"));
        assert_eq!(public_blob(&k.public_openssh), Some(k.public_blob.clone()));
        let other = KeyPair::generate("x").unwrap();
        assert_ne!(other.public_blob, k.public_blob);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        k.write(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_to_string(path.with_extension("pub")).unwrap().trim(),
            k.public_openssh
        );
    }
}

/// A SHA-512 crypt hash (`$6$…`) of `password`, with a random salt, as
/// `/etc/shadow` and cloud-init's `chpasswd` take it.
pub fn password_hash(password: &str) -> Result<String, KeyError> {
    use rand_core::RngCore;
    use sha_crypt::PasswordHasher;
    // 12 random bytes are 16 salt characters: the most crypt(3) reads (it
    // silently cuts a longer salt, and the hash would then never match).
    let mut salt = [0u8; 12];
    rand_core::OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| KeyError::Hash(e.to_string()))?;
    sha_crypt::ShaCrypt::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.as_str().to_owned())
        .map_err(|e| KeyError::Hash(e.to_string()))
}

#[cfg(test)]
mod password_tests {
    #[test]
    fn passwords_hash_to_sha512_crypt_with_a_fresh_salt() {
        use sha_crypt::PasswordVerifier;
        let a = super::password_hash("123456").unwrap();
        let b = super::password_hash("123456").unwrap();
        assert!(a.starts_with("$6$"), "{a}");
        assert_ne!(a, b, "a new salt each time");
        let fields: Vec<&str> = a.split('$').collect();
        let salt = fields.iter().rev().nth(1).unwrap();
        assert_eq!(salt.len(), 16, "crypt(3) reads at most 16 salt characters: {a}");
        let parsed = sha_crypt::PasswordHashRef::new(&a).unwrap();
        assert!(
            sha_crypt::ShaCrypt::default()
                .verify_password(b"123456", parsed)
                .is_ok()
        );
        assert!(
            sha_crypt::ShaCrypt::default()
                .verify_password(b"12345", parsed)
                .is_err()
        );
    }
}
