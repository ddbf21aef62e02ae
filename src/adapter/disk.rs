//! Writing and reading adapter directories. Every file is written to a temporary name in the
//! same directory, flushed, and renamed over the target, so an interrupted save leaves the
//! previous file whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::files::{AdapterFiles, CONFIG_FILE, RUN_FILE, WEIGHTS_FILE};
use crate::error::{CotoError, Result};

/// Writes `bytes` to `path` atomically: a sibling temporary file, `fsync`, then `rename`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    stage_file(path, bytes)?.commit()
}

/// A file written and flushed under a temporary name beside its target, not yet renamed over
/// it. Dropping it without [`StagedFile::commit`] deletes the temporary file and leaves the
/// target untouched.
#[derive(Debug)]
pub struct StagedFile {
    temporary: PathBuf,
    target: PathBuf,
}

impl StagedFile {
    /// Renames the temporary file over the target.
    pub fn commit(self) -> Result<()> {
        let result = std::fs::rename(&self.temporary, &self.target);
        result.map_err(|e| CotoError::io("failed to write", &self.target, e))
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Writes `bytes` to a temporary file beside `path` and flushes it to disk; the first half of
/// [`write_atomic`].
pub fn stage_file(path: &Path, bytes: &[u8]) -> Result<StagedFile> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staged = StagedFile {
        temporary: dir.join(format!(".{name}.tmp-{}", std::process::id())),
        target: path.to_path_buf(),
    };
    let result = (|| {
        let mut file = std::fs::File::create(&staged.temporary)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    result.map_err(|e| CotoError::io("failed to write", path, e))?;
    Ok(staged)
}

/// Saves `files` into `dir` (created if missing).
pub fn save_adapter(files: &AdapterFiles, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CotoError::io("failed to create", dir, e))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &files.weights_bytes()?)?;
    write_atomic(&dir.join(CONFIG_FILE), files.config_json().as_bytes())?;
    if let Some(run) = files.run_json() {
        write_atomic(&dir.join(RUN_FILE), run.as_bytes())?;
    }
    Ok(())
}

/// Reads an adapter directory written by coto or by PEFT (`coto_run.json` is optional).
pub fn load_adapter(dir: &Path) -> Result<AdapterFiles> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| CotoError::io("failed to read adapter file", path, e))
    };
    let weights = read(WEIGHTS_FILE)?;
    let config = String::from_utf8_lossy(&read(CONFIG_FILE)?).into_owned();
    let run = dir
        .join(RUN_FILE)
        .is_file()
        .then(|| read(RUN_FILE).map(|b| String::from_utf8_lossy(&b).into_owned()))
        .transpose()?;
    AdapterFiles::from_bytes(&weights, &config, run.as_deref(), dir)
}
