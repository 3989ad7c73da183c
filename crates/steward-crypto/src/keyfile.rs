//! Unseal-key files: the only IO in this crate (Unix only).
//!
//! Content is one line, `steward-root-key-v1:` followed by the standard base64 of
//! the 32-byte key and a newline. Files are created with mode 0600 from the first
//! byte, written to a temporary file in the same directory, fsynced, then published
//! under the final name without ever replacing an existing file, and the directory
//! is fsynced. Reading refuses files that group or other users can access.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::{CryptoError, KeyFileError, SecretKey, UnsealKey};

/// First characters of a key file.
pub const KEY_FILE_PREFIX: &str = "steward-root-key-v1:";
/// A valid key file is 65 bytes; anything much larger is not one.
const MAX_KEY_FILE_LEN: usize = 1024;
/// How many random temporary names to try before giving up.
const TEMP_ATTEMPTS: usize = 16;

/// Writes `key` to a new file at `path` with mode 0600. Fails with
/// [`KeyFileError::AlreadyExists`] rather than overwrite anything.
pub fn write_key_file(path: &Path, key: &UnsealKey) -> Result<(), KeyFileError> {
    let io_err = |action: &'static str, source: io::Error| KeyFileError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let exists = || KeyFileError::AlreadyExists {
        path: path.to_path_buf(),
    };

    match fs::symlink_metadata(path) {
        Ok(_) => return Err(exists()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", e)),
    }
    let Some(file_name) = path.file_name() else {
        return Err(io_err(
            "write",
            io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file"),
        ));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };

    let mut content = Zeroizing::new(String::with_capacity(KEY_FILE_PREFIX.len() + 45));
    content.push_str(KEY_FILE_PREFIX);
    content.push_str(&key.secret().to_base64());
    content.push('\n');

    let mut tmp =
        TempFile::create(dir, file_name).map_err(|e| io_err("create a temporary file for", e))?;
    // The mode given at creation is reduced by the umask; pin it to exactly 0600 (a
    // stricter umask could otherwise leave the owner unable to read the file).
    tmp.file
        .set_permissions(Permissions::from_mode(0o600))
        .map_err(|e| io_err("set permissions on", e))?;
    tmp.file
        .write_all(content.as_bytes())
        .map_err(|e| io_err("write", e))?;
    tmp.file.sync_all().map_err(|e| io_err("sync", e))?;

    // Publish atomically without clobbering: link(2) fails if the target exists,
    // unlike rename(2) which would silently replace a file created meanwhile.
    match fs::hard_link(&tmp.path, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists()),
        Err(_) => {
            // Filesystems without hard links: fall back to check-then-rename.
            if fs::symlink_metadata(path).is_ok() {
                return Err(exists());
            }
            fs::rename(&tmp.path, path).map_err(|e| io_err("move into place", e))?;
            tmp.renamed = true;
        }
    }
    drop(tmp); // removes the temporary name if it still exists
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync the directory of", e))?;
    Ok(())
}

/// Reads an unseal key written by [`write_key_file`]. Checks, in order: the file
/// exists, group/other have no permission bits, the content is one valid key line.
pub fn read_key_file(path: &Path) -> Result<UnsealKey, KeyFileError> {
    let corrupt = |reason: String| KeyFileError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let io_err = |action: &'static str, source: io::Error| KeyFileError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };

    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyFileError::NotFound {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err("open", e)),
    };
    // fstat the open file, so the checks apply to what is actually read.
    let meta = file.metadata().map_err(|e| io_err("inspect", e))?;
    if !meta.is_file() {
        return Err(corrupt("it is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }

    // Fixed buffer: no reallocation can leave copies of the key behind.
    let mut buf = Zeroizing::new([0u8; MAX_KEY_FILE_LEN + 1]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read", e)),
        }
    }
    if len > MAX_KEY_FILE_LEN {
        return Err(corrupt(format!(
            "it is larger than {MAX_KEY_FILE_LEN} bytes, far more than a key file holds"
        )));
    }
    let text = std::str::from_utf8(&buf[..len])
        .map_err(|_| corrupt("it is not text".into()))?
        .trim_end();
    if text.is_empty() {
        return Err(corrupt("it is empty".into()));
    }
    if text.contains('\n') {
        return Err(corrupt("it has more than one line".into()));
    }
    let Some(b64) = text.strip_prefix(KEY_FILE_PREFIX) else {
        return Err(corrupt(format!(
            "it does not start with `{KEY_FILE_PREFIX}` (not a Steward key file, or a newer format)"
        )));
    };
    let key = SecretKey::from_base64(b64).map_err(|e| match e {
        CryptoError::InvalidKeyLength { actual, .. } => {
            corrupt(format!("the key is {actual} bytes long, expected 32"))
        }
        _ => corrupt("the key is not valid base64".into()),
    })?;
    Ok(UnsealKey::from_secret(key))
}

/// A temporary file created 0600 next to the target; removed on drop unless it was
/// renamed into place.
struct TempFile {
    path: PathBuf,
    file: File,
    renamed: bool,
}

impl TempFile {
    fn create(dir: &Path, target_name: &std::ffi::OsStr) -> io::Result<Self> {
        let mut last_err = None;
        for _ in 0..TEMP_ATTEMPTS {
            let mut name = OsString::from(".");
            name.push(target_name);
            name.push(format!(
                ".tmp-{}",
                hex::encode(&crate::random_token_bytes()[..8])
            ));
            let path = dir.join(name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file,
                        renamed: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not pick a temporary file name")))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn write_raw(path: &Path, content: &[u8], mode: u32) {
        fs::write(path, content).unwrap();
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn file_mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_then_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let key = UnsealKey::generate();
        write_key_file(&path, &key).unwrap();
        assert_eq!(file_mode(&path), 0o600);
        let content = fs::read_to_string(&path).unwrap();
        assert_eq!(
            content,
            format!(
                "steward-root-key-v1:{}\n",
                key.secret().to_base64().as_str()
            )
        );
        let back = read_key_file(&path).unwrap();
        assert_eq!(back.secret(), key.secret());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("root.key")]);
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let first = UnsealKey::generate();
        write_key_file(&path, &first).unwrap();
        let err = write_key_file(&path, &UnsealKey::generate()).unwrap_err();
        assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(read_key_file(&path).unwrap(), first);
        // A dangling symlink counts as existing too.
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(matches!(
            write_key_file(&link, &first),
            Err(KeyFileError::AlreadyExists { .. })
        ));
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn write_into_missing_directory_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/root.key");
        let err = write_key_file(&path, &UnsealKey::generate()).unwrap_err();
        assert!(matches!(err, KeyFileError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("no/such/dir/root.key"));
    }

    #[test]
    fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        let err = read_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::NotFound { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("steward init"), "{msg}");
    }

    #[test]
    fn group_or_other_access_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let key = UnsealKey::generate();
        write_key_file(&path, &key).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o610, 0o601, 0o666] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            let err = read_key_file(&path).unwrap_err();
            match &err {
                KeyFileError::Permissions { mode: m, .. } => assert_eq!(*m, mode),
                other => panic!("mode {mode:o}: expected Permissions, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("chmod 600 {}", path.display())),
                "{msg}"
            );
            assert!(!msg.contains(key.secret().to_base64().as_str()));
        }
        // Owner-only modes are fine.
        for mode in [0o600, 0o400] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_key_file(&path).unwrap(), key);
        }
    }

    #[test]
    fn corrupt_contents_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let key = SecretKey::generate();
        let b64 = key.to_base64();
        let short = base64::engine::general_purpose::STANDARD.encode([3u8; 31]);
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\n".to_vec(),
            format!("{}\n", b64.as_str()).into_bytes(),
            format!("steward-root-key-v2:{}\n", b64.as_str()).into_bytes(),
            format!("steward-root-key-v1:{}!\n", &b64[..43]).into_bytes(),
            format!("steward-root-key-v1:{short}\n").into_bytes(),
            format!("steward-root-key-v1:{}\nsecond line\n", b64.as_str()).into_bytes(),
            vec![0xFF, 0xFE, 0x00, 0x01],
            vec![b'a'; 5000],
        ];
        for (i, c) in cases.iter().enumerate() {
            fs::remove_file(&path).ok();
            write_raw(&path, c, 0o600);
            let err = read_key_file(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Corrupt { .. }),
                "case {i}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(!msg.contains(&b64[..20]), "case {i} leaks key: {msg}");
        }
        // CRLF / missing final newline are tolerated.
        for c in [
            format!("steward-root-key-v1:{}\r\n", b64.as_str()),
            format!("steward-root-key-v1:{}", b64.as_str()),
        ] {
            fs::remove_file(&path).ok();
            write_raw(&path, c.as_bytes(), 0o600);
            assert_eq!(read_key_file(&path).unwrap().secret(), &key);
        }
    }

    #[test]
    fn directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
        let err = read_key_file(dir.path()).unwrap_err();
        assert!(matches!(err, KeyFileError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn existing_directory_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_key_file(dir.path(), &UnsealKey::generate()).unwrap_err();
        assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err:?}");
        assert!(dir.path().is_dir());
    }
}
