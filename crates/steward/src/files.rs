//! Writing files that hold secrets (the root token, rendered templates): created 0600 from the
//! start, written to a temporary file beside the target, fsynced, then renamed into place, so
//! a reader never sees a partial file and a crash leaves the old one.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

/// Replaces `path` with `data`, atomically, mode 0600.
pub fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    // Unique per process, so two renders into one directory never share a temporary file.
    let tmp = path.with_file_name(format!(".{name}.{}.steward-tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
