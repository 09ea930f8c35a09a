//! `DiskSync`: what one durable flush does on disk, beyond sled's own flush.
//!
//! sled 0.34 does not make its writes durable against a power loss by itself:
//! - On Linux its flush ends with `sync_file_range` on its log file, which neither writes
//!   the file's metadata (the log grows) nor flushes the drive's write cache. An
//!   `fdatasync` of the same file, through a handle of our own (it syncs the file,
//!   whichever handle wrote), does both.
//! - An item larger than a quarter of a segment (about 128 KiB: a large value, or a tree
//!   node holding several) goes to a file of its own under `blobs/`, which sled never
//!   syncs. When that folder has changed since the last flush, the files written since
//!   then are synced, and the folder.
//!
//! Against a process crash (`kill -9`) sled's flush alone would do: written data is in the
//! kernel's page cache. This is for power loss.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file in which sled 0.34 keeps its log, in the store's folder.
const SLED_LOG: &str = "db";
/// The folder in which sled 0.34 keeps its large items.
const SLED_BLOBS: &str = "blobs";
/// How much older than the last scan a blob file may look and still be synced: file
/// times come from a coarser clock than `SystemTime::now`.
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// The files of one sled database to sync after its flush.
pub(crate) struct DiskSync {
    log: File,
    blobs: PathBuf,
    /// The modification time of `blobs/` when it was last scanned.
    blobs_seen: Option<SystemTime>,
    /// When the last scan started: blob files older than that are synced already.
    scanned_at: Option<SystemTime>,
}

impl DiskSync {
    /// Opens the log file of the sled database in `path` (sled has created it), and syncs
    /// the folder so that the files sled created survive a power loss.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let log = File::open(path.join(SLED_LOG))?;
        sync_dir(path)?;
        Ok(Self {
            log,
            blobs: path.join(SLED_BLOBS),
            blobs_seen: None,
            scanned_at: None,
        })
    }

    /// A `DiskSync` whose log file is `log`, to make syncs fail in tests.
    #[cfg(test)]
    pub(crate) fn with_log(path: &Path, log: File) -> Self {
        Self {
            log,
            blobs: path.join(SLED_BLOBS),
            blobs_seen: None,
            scanned_at: None,
        }
    }

    /// Flushes `db` durably. Returns the bytes sled wrote and the blob files synced.
    pub(crate) fn flush(&mut self, db: &sled::Db) -> Result<(usize, usize), sled::Error> {
        let bytes = db.flush()?;
        self.log.sync_data()?;
        let blobs = self.sync_blobs()?;
        Ok((bytes, blobs))
    }

    fn sync_blobs(&mut self) -> io::Result<usize> {
        let changed = match fs::metadata(&self.blobs) {
            Ok(meta) => meta.modified()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if self.blobs_seen == Some(changed) {
            return Ok(0);
        }
        let scan = SystemTime::now();
        let since = self.scanned_at.map(|at| at - CLOCK_SLACK);
        let mut synced = 0;
        for entry in fs::read_dir(&self.blobs)? {
            let path = entry?.path();
            // sled removes blobs it no longer needs, maybe while we look.
            let result = File::open(&path).and_then(|file| {
                let modified = file.metadata()?.modified()?;
                if since.is_none_or(|since| modified >= since) {
                    file.sync_data()?;
                    synced += 1;
                }
                Ok(())
            });
            match result {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        sync_dir(&self.blobs)?;
        self.blobs_seen = Some(changed);
        self.scanned_at = Some(scan);
        Ok(synced)
    }
}

/// Syncs a folder: the names of the files created in it.
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(path)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_items_written_since_the_last_flush_are_synced_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .expect("opens");
        let mut sync = DiskSync::open(dir.path()).expect("opens");
        db.insert("small", &[1; 100][..]).expect("insert");
        assert_eq!(sync.flush(&db).expect("flush").1, 0, "no blob folder yet");

        db.insert("large", vec![2; 300 * 1024]).expect("insert");
        let (_, synced) = sync.flush(&db).expect("flush");
        assert!(synced >= 1, "the large value went to a blob file");
        db.insert("small", &[3; 100][..]).expect("insert");
        assert_eq!(
            sync.flush(&db).expect("flush").1,
            0,
            "nothing new under blobs/"
        );
    }
}
