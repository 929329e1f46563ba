//! The checkpoint of an import: where in the source the last stored batch ended (the cursor), with the
//! running totals, in a small JSON file replaced atomically (write, fsync, rename) after every batch the
//! target confirmed. Beside it, `<state>.installs` lists the installs seen so far (64-bit hashes of their
//! execution ids, appended per batch), so the report after a resumed import still counts each install
//! once. A kill at any moment leaves the previous checkpoint whole; the batch after it is written again,
//! which the stores' idempotent merge makes harmless.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Format version of the checkpoint file.
pub const VERSION: u32 = 1;

/// Where an import stands in its source: just after the last record of the last stored batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cursor {
    /// Nothing stored yet.
    Start,
    /// Records sorted by `created,id`: the last one's values, as the API showed them.
    Pocketbase { created: String, id: String },
    /// Rows sorted by (`created` in ms, `toString(id)`).
    Clickhouse { ms: u64, id: String },
    /// Byte offset after the last line, and that line's number.
    File { offset: u64, line: u64 },
}

/// Running totals of an import, over every run of the same checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Records (or rows, or lines) read.
    pub read: u64,
    /// Events the target stored.
    pub written: u64,
    /// Distinct installs among them.
    pub installs: u64,
    /// Records not imported, by rejection kind.
    pub rejected: BTreeMap<String, u64>,
}

impl Totals {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// The checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// Which source this is the checkpoint of (kind, address, collection or table or path).
    pub source: String,
    pub cursor: Cursor,
    /// Progress units behind the cursor: records, or bytes of a file.
    pub position: u64,
    pub totals: Totals,
    #[serde(with = "time::serde::rfc3339")]
    pub saved_at: OffsetDateTime,
}

/// A checkpoint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the checkpoint {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a checkpoint of this version of telemetry-import: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} is the checkpoint of another import ({found}); pass --restart to start over, or --state for another file")]
    OtherSource { path: PathBuf, found: String },
    #[error("cannot write the checkpoint {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Checkpoint {
    /// A checkpoint at the start of `source`.
    pub fn new(source: &str) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            source: source.to_string(),
            cursor: Cursor::Start,
            position: 0,
            totals: Totals::default(),
            saved_at: OffsetDateTime::now_utc(),
        }
    }

    /// The checkpoint at `path`, if there is one; it must belong to `source`.
    pub fn load(path: &Path, source: &str) -> Result<Option<Checkpoint>, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(StateError::Read {
                    path: path.into(),
                    error,
                })
            }
        };
        let checkpoint: Checkpoint =
            serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                path: path.into(),
                reason: e.to_string(),
            })?;
        if checkpoint.version != VERSION {
            return Err(StateError::Corrupt {
                path: path.into(),
                reason: format!("version {}", checkpoint.version),
            });
        }
        if checkpoint.source != source {
            return Err(StateError::OtherSource {
                path: path.into(),
                found: checkpoint.source,
            });
        }
        Ok(Some(checkpoint))
    }

    /// Replaces the file at `path` with this checkpoint, atomically and durably.
    pub fn save(&mut self, path: &Path) -> Result<(), StateError> {
        self.saved_at = OffsetDateTime::now_utc();
        let write = |error| StateError::Write {
            path: path.into(),
            error,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        let mut file = File::create(&tmp).map_err(write)?;
        file.write_all(&text).map_err(write)?;
        file.sync_all().map_err(write)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(write)?;
        sync_dir(path);
        Ok(())
    }
}

/// Makes a rename durable on power loss (a kill alone cannot undo it); best effort.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// The file of installs seen beside a checkpoint.
pub fn installs_path(state: &Path) -> PathBuf {
    let mut path = state.as_os_str().to_owned();
    path.push(".installs");
    PathBuf::from(path)
}

/// FNV-1a, 64 bit: a stable hash (the file outlives the binary that wrote it).
pub fn install_hash(execution_id: &str) -> u64 {
    execution_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash: u64, b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The installs seen so far, in memory and (with a checkpoint) in an append-only file of 8-byte hashes.
pub struct Installs {
    seen: HashSet<u64>,
    file: Option<(PathBuf, File)>,
}

impl Installs {
    /// Installs without a file (an import that cannot be resumed, e.g. from stdin).
    pub fn in_memory() -> Installs {
        Installs {
            seen: HashSet::new(),
            file: None,
        }
    }

    /// The installs recorded at `path`, or none when `restart`. A torn last entry is ignored.
    pub fn open(path: &Path, restart: bool) -> Result<Installs, StateError> {
        let read = |error| StateError::Read {
            path: path.into(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(read)?;
        let mut seen = HashSet::new();
        if restart {
            file.set_len(0).map_err(read)?;
        } else {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(read)?;
            let whole = bytes.len() - bytes.len() % 8;
            if whole != bytes.len() {
                // Appends must stay aligned after a torn entry.
                file.set_len(whole as u64).map_err(read)?;
            }
            seen.reserve(whole / 8);
            for chunk in bytes.chunks_exact(8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                seen.insert(u64::from_le_bytes(word));
            }
        }
        Ok(Installs {
            seen,
            file: Some((path.into(), file)),
        })
    }

    /// Records these execution ids; returns how many were new. New ones reach the file (synced)
    /// before the caller saves the checkpoint that covers them.
    pub fn add<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) -> Result<u64, StateError> {
        let mut new = Vec::new();
        for id in ids {
            let hash = install_hash(id);
            if self.seen.insert(hash) {
                new.extend_from_slice(&hash.to_le_bytes());
            }
        }
        if let (Some((path, file)), false) = (&mut self.file, new.is_empty()) {
            let write = |error| StateError::Write {
                path: path.clone(),
                error,
            };
            file.write_all(&new).map_err(write)?;
            file.sync_data().map_err(write)?;
        }
        Ok(new.len() as u64 / 8)
    }

    pub fn len(&self) -> u64 {
        self.seen.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_survives_a_round_trip_and_names_its_source() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state.json");
        assert_eq!(Checkpoint::load(&path, "pocketbase a").expect("none"), None);
        let mut cp = Checkpoint::new("pocketbase a");
        cp.cursor = Cursor::Pocketbase {
            created: "2025-01-01 00:00:00.000Z".into(),
            id: "abc".into(),
        };
        cp.position = 7;
        cp.totals.rejected.insert("invalid_field:nsapp".into(), 2);
        cp.save(&path).expect("save");
        assert_eq!(
            Checkpoint::load(&path, "pocketbase a").expect("load"),
            Some(cp)
        );
        assert!(matches!(
            Checkpoint::load(&path, "pocketbase b"),
            Err(StateError::OtherSource { .. })
        ));
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(
            Checkpoint::load(&path, "pocketbase a"),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn installs_are_counted_once_across_runs() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state.json.installs");
        let mut installs = Installs::open(&path, false).expect("open");
        assert_eq!(installs.add(["a", "b", "a"]).expect("add"), 2);
        drop(installs);
        // A torn entry from a kill in the middle of a write is ignored.
        let mut raw = OpenOptions::new().append(true).open(&path).expect("raw");
        raw.write_all(&[1, 2, 3]).expect("torn");
        drop(raw);
        let mut installs = Installs::open(&path, false).expect("reopen");
        assert_eq!(installs.len(), 2);
        assert_eq!(installs.add(["b", "c"]).expect("add"), 1);
        drop(installs);
        assert_eq!(Installs::open(&path, false).expect("again").len(), 3);
        let installs = Installs::open(&path, true).expect("restart");
        assert!(installs.is_empty());
    }

    #[test]
    fn the_install_hash_is_fnv1a() {
        let check = |id: &str, expected: u64| assert_eq!(install_hash(id), expected, "{id}");
        check("", 0xcbf2_9ce4_8422_2325);
        check("a", 0xaf63_dc4c_8601_ec8c);
        check("foobar", 0x8594_4171_f739_67e8);
    }
}
