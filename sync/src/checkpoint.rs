//! Exact checkpoints: how far the target has got in the source's replication stream.
//!
//! A [`Checkpoint`] is the source's replication id, the offset of the last byte whose
//! effect the target has acknowledged, and the database the stream had selected at
//! that point (the primary does not re-send SELECT after `+CONTINUE`, so the db must be
//! remembered with the offset). [`CheckpointStore`] persists it atomically (write a
//! temporary file, fsync it, rename it over the old one, fsync the directory), so a
//! crash at any instant leaves either the old or the new checkpoint, never a torn one.
//!
//! Invariant: for one replication id the stored offset never moves backwards. The
//! engine stores only offsets at command (and MULTI/EXEC) boundaries whose replies the
//! target has returned.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the checkpoint inside the checkpoint directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// Present from the start of a full copy until it ends with a resume point: a task
/// that finds it at start knows an earlier copy was cut short, or was copied by
/// `SYNC` (which has no resume point, so its marker stays), and that the target may
/// hold keys the source has deleted since.
pub const FULL_COPY_MARKER: &str = "full-copy-in-progress";

/// Where the target stands in the source's replication history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The source's 40-character replication id the offset belongs to.
    pub replid: String,
    /// Offset of the last stream byte applied and acknowledged by the target. A PSYNC
    /// resumes at `offset + 1`.
    pub offset: i64,
    /// The database selected in the stream at `offset`.
    pub db: u32,
}

/// Errors reading or writing a checkpoint; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {action} checkpoint file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint file {path} is not a valid checkpoint ({source}); move it away to start with a full sync")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The target's checkpoint key holds something else than a checkpoint. The task
    /// stops: taken for "no checkpoint" it would clear the target and copy again,
    /// taken for a guess it could skip or replay commands.
    #[error(
        "the target's {key} key holds {value}, which is not a checkpoint \
         (\"<replid> <offset> <db>\"); the task stops instead of guessing, since \
         resuming or clearing the target could lose data (fix: if the key was \
         overwritten, stop every writer of this target and set it back from the \
         checkpoint file's values; to copy everything again instead, delete the key \
         and the checkpoint directory)"
    )]
    MalformedTargetKey { key: String, value: String },
    #[error("checkpoint would move backwards for replid {replid}: stored {stored}, new {new}")]
    Backwards {
        replid: String,
        stored: i64,
        new: i64,
    },
}

/// A checkpoint directory.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    last: Option<Checkpoint>,
}

impl Checkpoint {
    /// Parses the value of the target's checkpoint key `key`: `<replid> <offset>
    /// <db>`, nothing more. Anything else is [`CheckpointError::MalformedTargetKey`],
    /// never "no checkpoint".
    pub fn parse_target_value(key: &[u8], value: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let parsed = std::str::from_utf8(value).ok().and_then(|text| {
            let mut words = text.split_whitespace();
            let checkpoint = Checkpoint {
                replid: words.next()?.to_owned(),
                offset: words.next()?.parse().ok().filter(|o: &i64| *o >= 0)?,
                db: words.next()?.parse().ok()?,
            };
            words.next().is_none().then_some(checkpoint)
        });
        parsed.ok_or_else(|| CheckpointError::MalformedTargetKey {
            key: String::from_utf8_lossy(key).into_owned(),
            value: shown_value(value),
        })
    }
}

/// At most 120 bytes of a value, escaped, for a message.
fn shown_value(value: &[u8]) -> String {
    let shown: String = value
        .iter()
        .take(120)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    match value.len() > 120 {
        true => format!("\"{shown}...\" ({} bytes)", value.len()),
        false => format!("\"{shown}\""),
    }
}

impl CheckpointStore {
    /// Opens (creating) `dir` and reads the checkpoint in it, if any.
    pub fn open(dir: impl Into<PathBuf>) -> Result<CheckpointStore, CheckpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io {
            action: "create the directory of",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(CHECKPOINT_FILE);
        let last =
            match fs::read(&path) {
                Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|source| {
                    CheckpointError::Corrupt {
                        path: path.clone(),
                        source,
                    }
                })?),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(CheckpointError::Io {
                        action: "read",
                        path,
                        source,
                    })
                }
            };
        Ok(CheckpointStore { dir, last })
    }

    /// The checkpoint last stored (or read at open).
    pub fn last(&self) -> Option<&Checkpoint> {
        self.last.as_ref()
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }

    /// Persists `checkpoint` atomically. Refuses an offset below the stored one for
    /// the same replid (a bug upstream, never silently accepted).
    pub fn store(&mut self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        match self.accept(checkpoint)? {
            Some(write) => write.write(),
            None => Ok(()),
        }
    }

    /// The checks of [`CheckpointStore::store`], with the write left to the caller,
    /// who may do it on another thread (the fsyncs took up to 20 ms on a busy disk,
    /// stalling the command stream). `checkpoint` becomes the last one at once; the
    /// caller must treat a failed write as the end of the task. None when it equals
    /// the last one (nothing to write).
    pub fn accept(
        &mut self,
        checkpoint: Checkpoint,
    ) -> Result<Option<CheckpointWrite>, CheckpointError> {
        if let Some(last) = &self.last {
            if last.replid == checkpoint.replid && checkpoint.offset < last.offset {
                return Err(CheckpointError::Backwards {
                    replid: checkpoint.replid,
                    stored: last.offset,
                    new: checkpoint.offset,
                });
            }
            if *last == checkpoint {
                return Ok(None);
            }
        }
        let write = CheckpointWrite {
            dir: self.dir.clone(),
            bytes: serde_json::to_vec_pretty(&checkpoint).unwrap_or_default(),
        };
        self.last = Some(checkpoint);
        Ok(Some(write))
    }

    /// Whether a full copy was started and has not ended with a resume point (the
    /// marker is present): cut short, or copied by `SYNC`.
    pub fn full_copy_interrupted(&self) -> bool {
        self.dir.join(FULL_COPY_MARKER).exists()
    }

    /// Marks (or unmarks) a full copy as in progress, durably.
    pub fn set_full_copy_in_progress(&mut self, on: bool) -> Result<(), CheckpointError> {
        let path = self.dir.join(FULL_COPY_MARKER);
        if on {
            write_atomically(
                &self.dir,
                FULL_COPY_MARKER,
                b"a full copy was started; while this file remains, no copy has ended with a resume point since\n",
            )
        } else {
            match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(CheckpointError::Io {
                    action: "remove",
                    path,
                    source,
                }),
            }
        }
    }

    /// Forgets the checkpoint (after the source's history is lost: a full resync).
    pub fn clear(&mut self) -> Result<(), CheckpointError> {
        let path = self.path();
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CheckpointError::Io {
                    action: "remove",
                    path,
                    source,
                })
            }
        }
        self.last = None;
        Ok(())
    }
}

/// A checkpoint accepted by [`CheckpointStore::accept`], not yet on disk.
#[derive(Debug)]
#[must_use = "an accepted checkpoint is on disk only once written"]
pub struct CheckpointWrite {
    dir: PathBuf,
    bytes: Vec<u8>,
}

impl CheckpointWrite {
    /// Writes it atomically (blocking: write, fsync, rename, fsync the directory).
    pub fn write(self) -> Result<(), CheckpointError> {
        write_atomically(&self.dir, CHECKPOINT_FILE, &self.bytes)
    }
}

/// Writes `bytes` to `dir/name` so that a crash leaves the old or the new content.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
    // A temporary name of this writer's own: two writers of one directory (a task
    // whose blocking write outlives its abort, beside the task that replaced it)
    // must never rename each other's file away (seen in CI: "rename into place:
    // No such file or directory" killed the new task).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let final_path = dir.join(name);
    let tmp_path = dir.join(format!("{name}.{}.{n}.tmp", std::process::id()));
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = File::create(&tmp_path).map_err(io("create", &tmp_path))?;
    file.write_all(bytes).map_err(io("write", &tmp_path))?;
    file.sync_all().map_err(io("fsync", &tmp_path))?;
    drop(file);
    fs::rename(&tmp_path, &final_path).map_err(io("rename into place", &final_path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the directory of", &final_path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(replid: &str, offset: i64, db: u32) -> Checkpoint {
        Checkpoint {
            replid: replid.into(),
            offset,
            db,
        }
    }

    #[test]
    fn stores_reopens_and_refuses_to_go_backwards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = CheckpointStore::open(dir.path()).expect("open");
        assert_eq!(store.last(), None);
        store.store(cp("a", 10, 0)).expect("store");
        store.store(cp("a", 20, 3)).expect("store");
        let err = store.store(cp("a", 19, 3)).expect_err("backwards");
        assert!(err.to_string().contains("backwards"), "{err}");
        // A new replid (after a full resync) may start anywhere.
        store.store(cp("b", 5, 0)).expect("new history");
        let reopened = CheckpointStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.last(), Some(&cp("b", 5, 0)));
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("lists")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "no temporary file is left: {left:?}");
    }

    #[test]
    fn two_writers_of_one_directory_never_rename_each_others_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        write_atomically(&path, CHECKPOINT_FILE, format!("{w}:{i}").as_bytes())
                            .expect("every write lands");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("no writer failed");
        }
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(CHECKPOINT_FILE), b"{not json").expect("write");
        let err = CheckpointStore::open(dir.path()).expect_err("corrupt");
        let text = err.to_string();
        assert!(
            text.contains("checkpoint.json") && text.contains("full sync"),
            "{text}"
        );
    }
}
