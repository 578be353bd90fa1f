//! The space set aside for replaying the write-ahead log on a full disk ([`super::wal`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// File name of the space reserved for replaying the log on a full disk.
pub const RESERVE_FILE: &str = "ledger.reserve";

/// Allocated disk space, given back to the file system when a replay on a full disk needs it.
#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
    present: AtomicBool,
}

impl Reserve {
    /// The reserve at `path`, of `bytes`; [`ensure`](Self::ensure) allocates it.
    pub(crate) fn new(path: PathBuf, bytes: u64) -> Reserve {
        Reserve {
            path,
            bytes,
            present: AtomicBool::new(false),
        }
    }

    /// Makes sure the space is allocated; an error (the disk is full) when it cannot be.
    pub(crate) fn ensure(&self) -> std::io::Result<()> {
        if self.present.load(Ordering::Acquire) {
            return Ok(());
        }
        let allocate = || -> std::io::Result<()> {
            let file = File::options()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.bytes) {
                Ok(()) => {}
                // A file system without fallocate: write the space out instead.
                Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                    let zeros = vec![0u8; 1 << 20];
                    let mut at = 0;
                    while at < self.bytes {
                        let n = (self.bytes - at).min(zeros.len() as u64) as usize;
                        file.write_all_at(&zeros[..n], at)?;
                        at += n as u64;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            file.sync_all()
        };
        match allocate() {
            Ok(()) => {
                self.present.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                // Same kind (a full disk stays recognisable), and the reason.
                Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot set aside {} KiB for replaying the write-ahead log ({}): {e}; \
                         appends are refused until there is room (free disk space, or lower \
                         the checkpoint interval, `loom serve --wal-checkpoint`)",
                        self.bytes >> 10,
                        self.path.display()
                    ),
                ))
            }
        }
    }

    /// Gives the space back; whether there was any to give.
    pub(crate) fn release(&self) -> bool {
        self.present.store(false, Ordering::Release);
        std::fs::remove_file(&self.path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_allocated_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESERVE_FILE);
        let reserve = Reserve::new(path.clone(), 1 << 20);
        reserve.ensure().unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        assert!(meta.blocks() * 512 >= 1 << 20, "allocated, not sparse");
        assert!(reserve.release());
        assert!(!path.exists());
        assert!(!reserve.release(), "nothing left to give");
        reserve.ensure().unwrap();
        assert!(path.exists());
    }
}
