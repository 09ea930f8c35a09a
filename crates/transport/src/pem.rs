//! Certificates and keys from PEM files.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file holds no item of the kind asked for.
    #[error("no {what} in {path}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
}

fn open(path: &Path) -> Result<BufReader<File>, PemError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| read_error(path, source))
}

fn read_error(path: &Path, source: io::Error) -> PemError {
    PemError::Read {
        path: path.to_owned(),
        source,
    }
}

/// Every certificate in `path`, in order (a chain: the leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<io::Result<Vec<_>>>()
        .map_err(|source| read_error(path, source))?;
    if certs.is_empty() {
        return Err(PemError::Missing {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| read_error(path, source))?
        .ok_or_else(|| PemError::Missing {
            path: path.to_owned(),
            what: "private key",
        })
}
