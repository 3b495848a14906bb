use std::fs;
use std::io::Write;
use std::path::Path;

use crate::CryptoError;

/// Writes a secret (private key, ledger secret) so that only the owner can read it.
///
/// The file is created with mode 0600 under a temporary name and renamed into place,
/// so a reader never sees a half-written key and the key is never briefly world-readable.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), CryptoError> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a public artefact (certificate, public key) readable by everyone.
pub fn write_public_file(path: &Path, contents: &[u8]) -> Result<(), CryptoError> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), CryptoError> {
    let tmp = path.with_extension(format!(
        "{}tmp",
        path.extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            // The mode passed to open is masked by the umask and ignored for an existing file.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CryptoError::io(path, e)
    })
}

/// PEM with `\n` line endings (the `pem` crate defaults to `\r\n`, which Unix
/// tools, CCF and ACL do not use).
pub(crate) fn pem_lf(tag: &str, der: impl Into<Vec<u8>>) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Reads a PEM file into a string, refusing files that are not UTF-8 text.
pub fn read_pem_file(path: &Path) -> Result<String, CryptoError> {
    let bytes = fs::read(path).map_err(|e| CryptoError::io(path, e))?;
    String::from_utf8(bytes)
        .map_err(|_| CryptoError::Pem(format!("{} is not text", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        write_private_file(&p, b"secret").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Overwriting keeps the mode and the content is replaced whole.
        write_private_file(&p, b"other").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"other");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
