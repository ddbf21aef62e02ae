//! Checkpoint directories: `checkpoints/step-NNNNNNNN/` under a run's output directory, each
//! holding the trainer state, the trainable parameters, the optimizer moments and any extra
//! files (the PEFT adapter). A checkpoint is written under a temporary name and renamed into
//! place, so a crash leaves either the previous checkpoints or the new one complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::trainer::{TrainerSnapshot, TrainerState};
use crate::error::{CotoError, Result};
use crate::model::WeightMap;

/// Counters, draws and settings, with the caller's run information.
pub const STATE_FILE: &str = "trainer_state.json";
/// Trainable parameters by module path.
pub const PARAMS_FILE: &str = "trainable.safetensors";
/// AdamW moments.
pub const MOMENTS_FILE: &str = "optimizer.safetensors";

#[derive(Serialize, Deserialize)]
struct StateFile {
    state: TrainerState,
    run: serde_json::Value,
}

/// Writes `snapshot` and `extra_files` as the checkpoint of its step under
/// `output/checkpoints`, then deletes all but the newest `keep` checkpoints. Returns the new
/// checkpoint's directory.
pub fn save_checkpoint(
    output: &Path,
    snapshot: &TrainerSnapshot,
    run: &serde_json::Value,
    extra_files: &[(&str, Vec<u8>)],
    keep: usize,
) -> Result<PathBuf> {
    let root = output.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(|e| CotoError::io("failed to create", &root, e))?;
    let name = format!("step-{:08}", snapshot.state.step);
    let final_dir = root.join(&name);
    let staging = root.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| CotoError::io("failed to create", &staging, e))?;

    let written = write_files(&staging, snapshot, run, extra_files);
    if let Err(error) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }

    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| CotoError::io("failed to replace", &final_dir, e))?;
    }
    std::fs::rename(&staging, &final_dir).map_err(|e| CotoError::io("failed to move into place", &final_dir, e))?;
    prune_checkpoints(&root, keep);
    Ok(final_dir)
}

fn write_files(
    staging: &Path,
    snapshot: &TrainerSnapshot,
    run: &serde_json::Value,
    extra_files: &[(&str, Vec<u8>)],
) -> Result<()> {
    let state = StateFile {
        state: snapshot.state.clone(),
        run: run.clone(),
    };
    let state_json = serde_json::to_vec_pretty(&state).map_err(|e| CotoError::Parse {
        format: "JSON",
        path: staging.join(STATE_FILE),
        message: e.to_string(),
    })?;
    write_synced(&staging.join(PARAMS_FILE), &snapshot.params.to_safetensors(None)?)?;
    write_synced(&staging.join(MOMENTS_FILE), &snapshot.moments.to_safetensors(None)?)?;
    for (file, bytes) in extra_files {
        write_synced(&staging.join(file), bytes)?;
    }
    // The state file goes last: a directory without it is never taken for a checkpoint.
    write_synced(&staging.join(STATE_FILE), &state_json)
}

/// The checkpoint to resume from: `dir` itself if it is a checkpoint, else the newest complete
/// checkpoint under `dir/checkpoints`.
pub fn latest_checkpoint(dir: &Path) -> Result<PathBuf> {
    if dir.join(STATE_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    list_checkpoints(&dir.join("checkpoints")).pop().ok_or_else(|| {
        CotoError::io(
            "no checkpoint found in",
            dir.join("checkpoints"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the run saved none; train with --save-every N to write checkpoints",
            ),
        )
    })
}

/// Reads a checkpoint directory: the snapshot and the run information stored with it.
pub fn load_checkpoint(dir: &Path) -> Result<(TrainerSnapshot, serde_json::Value)> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| CotoError::io("failed to read", &path, e))?;
    let state: StateFile = serde_json::from_str(&text).map_err(|e| CotoError::Parse {
        format: "JSON",
        path: path.clone(),
        message: e.to_string(),
    })?;
    let snapshot = TrainerSnapshot {
        state: state.state,
        params: WeightMap::from_file(&dir.join(PARAMS_FILE))?,
        moments: WeightMap::from_file(&dir.join(MOMENTS_FILE))?,
    };
    Ok((snapshot, state.run))
}

/// Complete checkpoints under `root`, oldest first.
fn list_checkpoints(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && path.join(STATE_FILE).is_file()
        })
        .collect();
    dirs.sort();
    dirs
}

fn prune_checkpoints(root: &Path, keep: usize) {
    let dirs = list_checkpoints(root);
    let excess = dirs.len().saturating_sub(keep.max(1));
    for dir in &dirs[..excess] {
        if let Err(error) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), %error, "could not delete an old checkpoint");
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let result = (|| {
        let mut file = std::fs::File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    result.map_err(|e| CotoError::io("failed to write", path, e))
}
