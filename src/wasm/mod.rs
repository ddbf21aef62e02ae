//! The JavaScript API of the WASM package: a `Trainer` class that fine-tunes a BERT classifier
//! with CoTo in the browser, on WebGPU or, where `navigator.gpu` is missing, on the CPU backend.
//!
//! Every method that touches the device returns a `Promise`, because browsers read GPU buffers
//! back only asynchronously. Errors reject the promise with an `Error` whose message names the
//! problem; panics are reported to the console by the hook installed at start-up.

mod fetch;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use burn::module::Module;
use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;
use js_sys::{Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::adapter::{AdapterFiles, CONFIG_FILE, RUN_FILE, RunInfo, WEIGHTS_FILE};
use crate::data::{DataOptions, prepare_dataset, read_records};
use crate::model::{BertConfig, Checkpoint, TextTokenizer, WeightMap};
use crate::train::{TrainConfig, Trainer as CoreTrainer, TrainerSnapshot, predict_texts_async};

/// Installs a panic hook that reports panics to the console as errors.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("coto panicked: {info}");
        web_console_error(&message);
    }));
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn web_console_error(message: &str);
}

/// A fine-tuning run in the browser.
#[wasm_bindgen]
pub struct Trainer {
    inner: Rc<RefCell<CoreTrainer>>,
    device: String,
    base_model: String,
}

#[wasm_bindgen]
impl Trainer {
    /// Creates a trainer.
    ///
    /// - `model`: `{config, weights, tokenizer}`, each a `Uint8Array` of the file or a URL string
    ///   (`config.json`, `model.safetensors`, `tokenizer.json`), and optionally `name`.
    /// - `data`: `{text}` (the file's contents) or `{url}`, with optional `validationText`,
    ///   `format` (`csv`, `tsv`, `jsonl`, `label-first`), `textColumn`, `labelColumn`.
    /// - `settings`: training settings with the keys of `coto train --config` (e.g.
    ///   `{method: "coto", lr: 5e-4, max_steps: 50, coto: {initial_p: 0.1}}`).
    /// - `device`: `"auto"` (WebGPU if the browser has it, else the CPU), `"webgpu"` or `"cpu"`.
    pub async fn create(model: JsValue, data: JsValue, settings: JsValue, device: String) -> Result<Trainer, JsError> {
        let config: TrainConfig = from_js(&settings, "settings")?;
        config.validate().map_err(js_error)?;
        let checkpoint = read_checkpoint(&model, config.max_length).await?;
        let dataset = read_dataset(&data, &config).await?;
        let (device, description, buffer_limit) = init_device(&device).await?;
        if let Some(limit) = buffer_limit {
            checkpoint.weights.check_buffer_limit(limit, &description).map_err(js_error)?;
        }
        let trainer = CoreTrainer::new(checkpoint, dataset, config, &device).map_err(js_error)?;
        let base_model = Reflect::get(&model, &"name".into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_else(|| "all-MiniLM-L6-v2".into());
        Ok(Trainer {
            inner: Rc::new(RefCell::new(trainer)),
            device: description,
            base_model,
        })
    }

    /// The compute device: the WebGPU adapter, or the CPU backend.
    #[wasm_bindgen(getter)]
    pub fn device(&self) -> String {
        self.device.clone()
    }

    /// Optimizer steps in the whole run.
    #[wasm_bindgen(getter, js_name = totalSteps)]
    pub fn total_steps(&self) -> Result<usize, JsError> {
        Ok(self.peek()?.total_steps())
    }

    /// Optimizer steps taken.
    #[wasm_bindgen(getter, js_name = stepCount)]
    pub fn step_count(&self) -> Result<usize, JsError> {
        Ok(self.peek()?.step_count())
    }

    /// Number of CoTo groups (transformer layers by default).
    #[wasm_bindgen(getter, js_name = groupCount)]
    pub fn group_count(&self) -> Result<usize, JsError> {
        Ok(self.peek()?.gates().groups().len())
    }

    /// Class names in id order.
    #[wasm_bindgen(getter)]
    pub fn labels(&self) -> Result<Vec<String>, JsError> {
        Ok(self.peek()?.labels().names().to_vec())
    }

    /// Training and validation set sizes, `[train, validation]`.
    #[wasm_bindgen(getter, js_name = datasetSizes)]
    pub fn dataset_sizes(&self) -> Result<Vec<usize>, JsError> {
        let trainer = self.peek()?;
        Ok(vec![trainer.dataset().train.len(), trainer.dataset().validation.len()])
    }

    /// The activation probability `p` of CoTo's schedule after `step` optimizer steps (1 for
    /// plain LoRA), for plotting the schedule.
    #[wasm_bindgen(js_name = scheduleP)]
    pub fn schedule_p(&self, step: usize) -> Result<f64, JsError> {
        let trainer = self.peek()?;
        Ok(match trainer.config().method {
            crate::coto::Method::Lora => 1.0,
            crate::coto::Method::Coto => trainer.gates().schedule().p_at(step),
        })
    }

    /// Takes one optimizer step. Resolves to `{step, loss, lr, p, active_groups, grad_norm,
    /// tokens, examples}`.
    pub fn step(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let mut trainer = borrow_mut(&inner)?;
            let report = trainer.step_async().await.map_err(to_js_value)?;
            to_js(&report)
        })
    }

    /// Takes up to `steps` optimizer steps (fewer if the run ends), calling
    /// `on_progress(report)` after each one and yielding to the browser in between. Resolves to
    /// the last report, or `null` if the run was already done.
    pub fn train(&self, steps: usize, on_progress: Option<js_sys::Function>) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let mut last = JsValue::NULL;
            for _ in 0..steps {
                let report = {
                    let mut trainer = borrow_mut(&inner)?;
                    if trainer.is_done() {
                        break;
                    }
                    trainer.step_async().await.map_err(to_js_value)?
                };
                last = to_js(&report)?;
                if let Some(callback) = &on_progress {
                    callback.call1(&JsValue::NULL, &last)?;
                }
                yield_to_browser().await;
            }
            Ok(last)
        })
    }

    /// Evaluates on the validation set with every adapter on. Resolves to `{step, metrics:
    /// {loss, accuracy, macro_f1, examples}}`.
    pub fn evaluate(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let trainer = borrow(&inner)?;
            let report = trainer.evaluate_async().await.map_err(to_js_value)?;
            to_js(&report)
        })
    }

    /// Classifies `text`. Resolves to `{label, logits}`.
    pub fn predict(&self, text: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let trainer = borrow(&inner)?;
            let model = trainer.model().valid();
            let predictions = predict_texts_async(&model, trainer.tokenizer(), &[text.as_str()], 1)
                .await
                .map_err(to_js_value)?;
            let label = trainer.labels().name(predictions.predicted[0]).to_string();
            to_js(&serde_json::json!({ "label": label, "logits": predictions.logits }))
        })
    }

    /// The adapter in Hugging Face PEFT's format. Resolves to an object mapping file names to
    /// contents: `adapter_model.safetensors` (`Uint8Array`), `adapter_config.json` and
    /// `coto_run.json` (strings).
    #[wasm_bindgen(js_name = exportAdapter)]
    pub fn export_adapter(&self) -> Promise {
        let inner = self.inner.clone();
        let base_model = self.base_model.clone();
        future_to_promise(async move {
            let trainer = borrow(&inner)?;
            let run = RunInfo {
                coto_version: env!("CARGO_PKG_VERSION").into(),
                labels: trainer.labels().names().to_vec(),
                train: Some(trainer.config().clone()),
                steps: trainer.step_count(),
                metrics: None,
                base_model: Some(base_model),
                origin: Some("trained in the browser".into()),
            };
            let files = AdapterFiles::from_model_async(trainer.model(), &trainer.config().lora, run)
                .await
                .map_err(to_js_value)?;
            let out = Object::new();
            let weights = files.weights_bytes().map_err(to_js_value)?;
            Reflect::set(&out, &WEIGHTS_FILE.into(), &Uint8Array::from(weights.as_slice()))?;
            Reflect::set(&out, &CONFIG_FILE.into(), &files.config_json().into())?;
            if let Some(run) = files.run_json() {
                Reflect::set(&out, &RUN_FILE.into(), &run.into())?;
            }
            Ok(out.into())
        })
    }

    /// Reads the run's state after the last completed step: the trainable parameters, AdamW's
    /// moments, the CoTo draw and generator, and the data order. Resolves to a `Uint8Array`
    /// (one safetensors buffer) that [`Trainer::restore_state`] of a trainer with the same
    /// model, data and settings continues from, on any device. The page keeps the latest one
    /// so that a lost GPU loses no finished steps.
    #[wasm_bindgen(js_name = saveState)]
    pub fn save_state(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let trainer = borrow(&inner)?;
            let snapshot = trainer.snapshot_async().await.map_err(to_js_value)?;
            let bytes = snapshot.to_bytes().map_err(to_js_value)?;
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// Continues from a state saved by `saveState()`, replacing this trainer's parameters,
    /// moments, CoTo draw and position. Resolves to the step count it continues from. Rejects
    /// if the state was saved with other settings or another model.
    #[wasm_bindgen(js_name = restoreState)]
    pub fn restore_state(&self, state: Uint8Array) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let snapshot =
                TrainerSnapshot::from_bytes(&state.to_vec(), Path::new("saved trainer state")).map_err(to_js_value)?;
            let mut trainer = borrow_mut(&inner)?;
            trainer.restore(&snapshot).map_err(to_js_value)?;
            Ok(JsValue::from(trainer.step_count()))
        })
    }

    /// Borrows the trainer for a getter, failing (not trapping) while a step holds it.
    fn peek(&self) -> Result<std::cell::Ref<'_, CoreTrainer>, JsError> {
        self.inner
            .try_borrow()
            .map_err(|_| JsError::new("the trainer is busy with a step; read it after the step resolves"))
    }

    /// Releases the model and its device memory.
    pub fn dispose(self) {
        drop(self);
    }
}

/// Reads the three model files from `{config, weights, tokenizer}`.
async fn read_checkpoint(model: &JsValue, max_length: usize) -> Result<Checkpoint, JsError> {
    let config = fetch::bytes_field(model, "config").await?;
    let weights = fetch::bytes_field(model, "weights").await?;
    let tokenizer = fetch::bytes_field(model, "tokenizer").await?;
    let config_text = String::from_utf8(config).map_err(|_| JsError::new("config.json is not UTF-8 text"))?;
    let config = BertConfig::from_json(&config_text, Path::new("config.json")).map_err(js_error)?;
    let weights = WeightMap::from_bytes(&weights, Path::new("model.safetensors")).map_err(js_error)?;
    let tokenizer = TextTokenizer::from_bytes(&tokenizer, "tokenizer.json", max_length).map_err(js_error)?;
    Checkpoint::from_parts(config, weights, tokenizer).map_err(js_error)
}

/// Reads and splits the labelled data described by `data`.
async fn read_dataset(data: &JsValue, config: &TrainConfig) -> Result<crate::data::Dataset, JsError> {
    let text = match fetch::string_field(data, "text") {
        Some(text) => text.into_bytes(),
        None => fetch::bytes_field(data, "url").await?,
    };
    let mut options = DataOptions::default();
    if let Some(format) = fetch::string_field(data, "format") {
        options.format = serde_json::from_value(serde_json::Value::String(format.clone()))
            .map_err(|_| JsError::new(&format!("unknown data format {format:?}; use csv, tsv, jsonl or label-first")))?;
    }
    if let Some(column) = fetch::string_field(data, "textColumn") {
        options.text_column = column;
    }
    if let Some(column) = fetch::string_field(data, "labelColumn") {
        options.label_column = column;
    }
    let records = read_records(&text, "training data", &options).map_err(js_error)?;
    let validation = fetch::string_field(data, "validationText")
        .map(|text| read_records(text.as_bytes(), "validation data", &options))
        .transpose()
        .map_err(js_error)?;
    prepare_dataset(records, validation, config.validation_fraction, config.seed, "training data").map_err(js_error)
}

/// Initialises the requested device; "auto" falls back to the CPU when WebGPU is missing or
/// fails, and warns in the console. Returns the device, its description and, on WebGPU, the
/// largest buffer the adapter allows.
async fn init_device(choice: &str) -> Result<(Device, String, Option<u64>), JsError> {
    let has_webgpu = Reflect::get(&js_sys::global(), &"navigator".into())
        .and_then(|navigator| Reflect::get(&navigator, &"gpu".into()))
        .map(|gpu| !gpu.is_undefined() && !gpu.is_null())
        .unwrap_or(false);
    let cpu = || (Device::flex(), "CPU (burn flex in WebAssembly)".to_string(), None);
    match choice {
        "cpu" => Ok(cpu()),
        "webgpu" | "auto" => {
            if !has_webgpu {
                if choice == "webgpu" {
                    return Err(JsError::new(
                        "this browser does not expose WebGPU (navigator.gpu is missing); use a current \
                         Chromium or Firefox with WebGPU enabled, or choose the CPU",
                    ));
                }
                web_console_warn("WebGPU is not available in this browser; training on the CPU instead");
                return Ok(cpu());
            }
            match Device::wgpu_options().graphics_api(WgpuBackend::WebGpu).init_async().await {
                Ok(device) => {
                    let facts = adapter_facts().await;
                    let name = match facts.description {
                        Some(name) => name,
                        None => device.identity().map(|id| id.name).unwrap_or_default(),
                    };
                    // Firefox withholds the adapter's vendor and description from pages.
                    let name = if name.trim().is_empty() { "the browser does not name the adapter".into() } else { name };
                    Ok((device, format!("WebGPU ({name})"), facts.buffer_limit))
                }
                Err(error) if choice == "auto" => {
                    web_console_warn(&format!("WebGPU failed to start ({error:?}); training on the CPU instead"));
                    Ok(cpu())
                }
                Err(error) => Err(JsError::new(&format!("WebGPU failed to start: {error:?}"))),
            }
        }
        other => Err(JsError::new(&format!("unknown device {other:?}; use auto, webgpu or cpu"))),
    }
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    fn web_console_warn(message: &str);
}

/// Reads the browser's default WebGPU adapter: its description (`GPUAdapter.info`) and its
/// buffer limits (`GPUAdapter.limits`).
async fn adapter_facts() -> AdapterFacts {
    let Some(adapter) = request_adapter().await else {
        return AdapterFacts::default();
    };
    let info = Reflect::get(&adapter, &"info".into()).unwrap_or(JsValue::UNDEFINED);
    let field = |name: &str| Reflect::get(&info, &name.into()).ok().and_then(|v| v.as_string()).filter(|s| !s.is_empty());
    let parts: Vec<String> = ["vendor", "architecture", "description"].iter().filter_map(|name| field(name)).collect();
    let limits = Reflect::get(&adapter, &"limits".into()).unwrap_or(JsValue::UNDEFINED);
    let limit = |name: &str| Reflect::get(&limits, &name.into()).ok().and_then(|v| v.as_f64()).map(|v| v as u64);
    let buffer_limit = match (limit("maxStorageBufferBindingSize"), limit("maxBufferSize")) {
        (Some(binding), Some(buffer)) => Some(binding.min(buffer)),
        (one, other) => one.or(other),
    };
    AdapterFacts {
        description: (!parts.is_empty()).then(|| parts.join(" ")),
        buffer_limit,
    }
}

/// Facts the page reports and checks about the browser's WebGPU adapter. burn requests a device
/// with the adapter's own limits, so these are the device's limits too.
#[derive(Default)]
struct AdapterFacts {
    /// Vendor, architecture and description, where the browser provides them.
    description: Option<String>,
    /// The largest buffer one tensor may occupy, in bytes.
    buffer_limit: Option<u64>,
}

/// Requests the default WebGPU adapter; `None` where there is none.
async fn request_adapter() -> Option<JsValue> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let gpu = Reflect::get(&navigator, &"gpu".into()).ok()?;
    let request: js_sys::Function = Reflect::get(&gpu, &"requestAdapter".into()).ok()?.dyn_into().ok()?;
    let promise: Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    (!adapter.is_null() && !adapter.is_undefined()).then_some(adapter)
}

/// Waits for a macrotask, so that the page repaints and handles input between steps.
async fn yield_to_browser() {
    let promise = Promise::new(&mut |resolve, _| {
        let set_timeout = Reflect::get(&js_sys::global(), &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        if let Some(set_timeout) = set_timeout {
            let _ = set_timeout.call2(&JsValue::NULL, &resolve, &JsValue::from(0));
        } else {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

fn borrow(inner: &Rc<RefCell<CoreTrainer>>) -> Result<std::cell::Ref<'_, CoreTrainer>, JsValue> {
    inner
        .try_borrow()
        .map_err(|_| JsError::new("the trainer is busy with a step; await it before the next call").into())
}

fn borrow_mut(inner: &Rc<RefCell<CoreTrainer>>) -> Result<std::cell::RefMut<'_, CoreTrainer>, JsValue> {
    inner
        .try_borrow_mut()
        .map_err(|_| JsError::new("the trainer is busy; await the previous call before the next").into())
}

fn from_js<T: serde::de::DeserializeOwned>(value: &JsValue, what: &str) -> Result<T, JsError> {
    let text = if value.is_undefined() || value.is_null() {
        "{}".to_string()
    } else {
        js_sys::JSON::stringify(value)
            .map_err(|_| JsError::new(&format!("{what} is not a plain object")))?
            .as_string()
            .unwrap_or_else(|| "{}".into())
    };
    serde_json::from_str(&text).map_err(|e| JsError::new(&format!("invalid {what}: {e}")))
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    let text = serde_json::to_string(value).map_err(|e| JsError::new(&e.to_string()))?;
    js_sys::JSON::parse(&text)
}

fn js_error(error: crate::CotoError) -> JsError {
    JsError::new(&error.to_string())
}

fn to_js_value(error: crate::CotoError) -> JsValue {
    JsError::new(&error.to_string()).into()
}
