//! A run's state as one safetensors buffer, for callers without a file system: the web page
//! keeps the last good state in memory and continues from it on another device.
//!
//! Tensor names are `params/{module path}` for the trainable parameters and
//! `moments/{module path}#m` / `#v` for AdamW's moments; the header metadata contains the
//! [`TrainerState`] as JSON under `coto_trainer_state`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use super::trainer::{TrainerSnapshot, TrainerState};
use crate::error::{CotoError, Result};
use crate::model::WeightMap;

const STATE_KEY: &str = "coto_trainer_state";
const PARAMS_PREFIX: &str = "params/";
const MOMENTS_PREFIX: &str = "moments/";

impl TrainerSnapshot {
    /// Serialises the snapshot as one safetensors buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let source = Path::new("trainer state");
        let state = serde_json::to_string(&self.state).map_err(|e| CotoError::Parse {
            format: "JSON",
            path: source.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut all = WeightMap::new(source);
        for (prefix, map) in [(PARAMS_PREFIX, &self.params), (MOMENTS_PREFIX, &self.moments)] {
            for name in map.names() {
                if let Some(tensor) = map.get_any(name) {
                    all.insert(format!("{prefix}{name}"), tensor.clone());
                }
            }
        }
        all.to_safetensors(Some(HashMap::from([(STATE_KEY.to_string(), state)])))
    }

    /// Reads a buffer written by [`TrainerSnapshot::to_bytes`]; `source` names it in errors.
    pub fn from_bytes(bytes: &[u8], source: &Path) -> Result<Self> {
        let invalid = |message: String| CotoError::Weights {
            path: source.to_path_buf(),
            message,
        };
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| invalid(format!("not a saved trainer state ({e}); save it again with saveState()")))?;
        let state_json = header
            .metadata()
            .as_ref()
            .and_then(|metadata| metadata.get(STATE_KEY))
            .ok_or_else(|| invalid(format!("the header has no `{STATE_KEY}`; this is not a saved trainer state")))?;
        let state: TrainerState = serde_json::from_str(state_json)
            .map_err(|e| invalid(format!("`{STATE_KEY}` is not a trainer state written by this version: {e}")))?;
        let all = WeightMap::from_bytes(bytes, source)?;
        let mut params = WeightMap::new(source);
        let mut moments = WeightMap::new(source);
        for name in all.names() {
            let Some(tensor) = all.get_any(name) else { continue };
            if let Some(path) = name.strip_prefix(PARAMS_PREFIX) {
                params.insert(path, tensor.clone());
            } else if let Some(path) = name.strip_prefix(MOMENTS_PREFIX) {
                moments.insert(path, tensor.clone());
            } else {
                return Err(invalid(format!("unexpected tensor `{name}` in a trainer state")));
            }
        }
        Ok(Self { state, params, moments })
    }
}
