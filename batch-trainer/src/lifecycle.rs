//! Model versions on disk over time: moving `CURRENT` (remembering the version
//! it replaced in `PREVIOUS`), keeping the last N versions, and one run at a
//! time per artifacts root.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use model::artifact::{self, ArtifactError};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Names the version `CURRENT` named before its last move (the rollback target).
pub const PREVIOUS_FILE: &str = "PREVIOUS";
/// Held while a run or a promotion works on an artifacts root.
pub const LOCK_FILE: &str = ".trainer.lock";

/// Why a lifecycle step failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another trainer (pid {pid}) is working on {root}; lock file {lock}")]
    Busy { pid: String, root: PathBuf, lock: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LifecycleError + '_ {
    move |source| LifecycleError::Io { path: path.to_path_buf(), source }
}

/// The version `PREVIOUS` names, if any.
pub fn previous_version(root: &Path) -> Result<Option<String>, LifecycleError> {
    let path = root.join(PREVIOUS_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LifecycleError::Io { path, source: e }),
    }
}

/// Serves `version`: verifies it (via [`artifact::set_current`]), after
/// recording the version it replaces in `PREVIOUS` (only when that differs, so
/// re-promoting the served version keeps the rollback target).
pub fn set_current(root: &Path, version: &str) -> Result<(), LifecycleError> {
    let before = artifact::current_version(root)?;
    if let Some(prev) = before.filter(|b| b != version) {
        let tmp = root.join(format!(".{PREVIOUS_FILE}.tmp-{}", std::process::id()));
        let path = root.join(PREVIOUS_FILE);
        fs::write(&tmp, format!("{prev}\n")).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    artifact::set_current(root, version)?;
    Ok(())
}

/// Deletes the oldest versions (by `created_at` of the manifest, then name)
/// beyond the newest `keep`, never `CURRENT` nor `PREVIOUS`. Returns the
/// deleted names. An unreadable manifest sorts as oldest (it cannot be served).
pub fn prune(root: &Path, keep: usize) -> Result<Vec<String>, LifecycleError> {
    let current = artifact::current_version(root)?;
    let previous = previous_version(root)?;
    let mut versions: Vec<(i128, String)> = artifact::list_versions(root)?
        .into_iter()
        .map(|v| {
            // Parsed, not compared as text: fractional seconds vary in length.
            let created = artifact::read_manifest(&root.join(&v))
                .ok()
                .and_then(|m| OffsetDateTime::parse(&m.created_at, &Rfc3339).ok())
                .map_or(i128::MIN, OffsetDateTime::unix_timestamp_nanos);
            (created, v)
        })
        .collect();
    // Newest first.
    versions.sort_by(|a, b| b.cmp(a));
    let mut deleted = Vec::new();
    for (_, v) in versions.into_iter().skip(keep) {
        if current.as_deref() == Some(v.as_str()) || previous.as_deref() == Some(v.as_str()) {
            continue;
        }
        let dir = root.join(&v);
        // Renamed first so a reader never sees a half-deleted version under its name.
        let doomed = root.join(format!(".{v}.deleting-{}", std::process::id()));
        fs::rename(&dir, &doomed).map_err(io(&dir))?;
        fs::remove_dir_all(&doomed).map_err(io(&doomed))?;
        tracing::info!(version = %v, "pruned model version");
        deleted.push(v);
    }
    Ok(deleted)
}

/// One run at a time per artifacts root, across processes (a schedule and a
/// manual `train` must not interleave their `CURRENT` moves). The lock file
/// holds the owner's pid; a lock whose process is gone is taken over.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock or fails with [`LifecycleError::Busy`].
    pub fn acquire(root: &Path) -> Result<RunLock, LifecycleError> {
        fs::create_dir_all(root).map_err(io(root))?;
        let path = root.join(LOCK_FILE);
        for _ in 0..2 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io(&path))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
                    if process_alive(&pid) {
                        return Err(LifecycleError::Busy { pid, root: root.to_path_buf(), lock: path });
                    }
                    tracing::warn!(lock = %path.display(), pid, "taking over a stale trainer lock");
                    let _ = fs::remove_file(&path);
                }
                Err(e) => return Err(LifecycleError::Io { path, source: e }),
            }
        }
        let pid = fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
        Err(LifecycleError::Busy { pid, root: root.to_path_buf(), lock: path })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// True when `pid` names a running process (Linux `/proc`; elsewhere a lock
/// is assumed alive, the safe side).
fn process_alive(pid: &str) -> bool {
    let Ok(n) = pid.parse::<u32>() else { return false };
    if n == std::process::id() {
        return true;
    }
    if Path::new("/proc/self").exists() {
        Path::new("/proc").join(n.to_string()).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synthetic::{synthetic_artifact, SyntheticSpec};

    fn write(root: &Path, version: &str, created_at: &str) {
        let mut a = synthetic_artifact(&SyntheticSpec { version: version.into(), ..SyntheticSpec::default() });
        a.manifest.created_at = created_at.into();
        a.write(root).unwrap();
    }

    #[test]
    fn prune_keeps_the_newest_n_and_never_current_or_previous() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Names deliberately not in time order: age comes from the manifest.
        for (v, t) in [("e", "2026-01-01T00:00:00Z"), ("d", "2026-01-02T00:00:00Z"), ("c", "2026-01-03T00:00:00Z")] {
            write(root, v, t);
        }
        // Fractional seconds of different lengths still order by time.
        for (v, t) in [("b", "2026-01-04T00:00:00.12Z"), ("a", "2026-01-04T00:00:00.2Z")] {
            write(root, v, t);
        }
        set_current(root, "e").unwrap();
        set_current(root, "d").unwrap();
        assert_eq!(previous_version(root).unwrap().as_deref(), Some("e"));
        // Re-promoting the served version keeps the rollback target.
        set_current(root, "d").unwrap();
        assert_eq!(previous_version(root).unwrap().as_deref(), Some("e"));
        let deleted = prune(root, 2).unwrap();
        assert_eq!(deleted, vec!["c".to_string()]);
        assert_eq!(artifact::list_versions(root).unwrap(), vec!["a", "b", "d", "e"]);
        assert_eq!(artifact::current_version(root).unwrap().as_deref(), Some("d"));
        assert!(prune(root, 2).unwrap().is_empty(), "nothing more to delete");
        assert!(prune(root, 1).unwrap() == vec!["b".to_string()]);
    }

    #[test]
    fn one_lock_per_root_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, LifecycleError::Busy { .. }), "{err}");
        drop(lock);
        let again = RunLock::acquire(dir.path()).unwrap();
        drop(again);
        // A lock left by a process that no longer exists.
        fs::write(dir.path().join(LOCK_FILE), "4194999\n").unwrap();
        assert!(RunLock::acquire(dir.path()).is_ok());
    }
}
