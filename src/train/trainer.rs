//! The training loop shared by the CLI and the browser: one optimizer step at a time, with
//! CoTo gates redrawn after each step and evaluation with every adapter on.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::config::{NonFinite, TrainConfig};
use super::lr::LrScheduler;
use super::evaluate::{Predictions, predict_texts, predict_texts_async, score};
use super::metrics::Metrics;
use super::optim::{AdamW, AdamWConfig, ParamGrads};
use super::params::{load_trainable_params, trainable_params, trainable_params_async};
use crate::coto::{AdapterGroups, AdapterSlot, CotoSchedule, GateController, GateState, Gates, Mode};
use crate::data::{Dataset, EpochOrder, Example, LabelMap};
use crate::error::{CotoError, Result};
use crate::model::{
    BertClassifier, BertModel, Checkpoint, EncodedBatch, TextTokenizer, WeightMap, inject_lora, seed_masks,
};
use crate::rng;

/// The generator stream reserved for adapter and head initialisation.
const INIT_STREAM: u64 = 1;

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The optimizer step just taken, from 1.
    pub step: usize,
    /// Mean training loss over the step's examples.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// CoTo's activation probability for this step's draw.
    pub p: f64,
    /// Per group, whether it was on during this step.
    pub active_groups: Vec<bool>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real (unpadded) tokens processed.
    pub tokens: usize,
    /// Examples processed.
    pub examples: usize,
}

/// An evaluation result at a given step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Optimizer steps taken when evaluated.
    pub step: usize,
    /// The metrics.
    pub metrics: Metrics,
}

/// A step whose gradients are computed and clipped but not applied, with its loss and
/// gradient norm still on the device.
struct ComputedStep {
    grads: ParamGrads,
    loss: Tensor<1>,
    grad_norm: Option<Tensor<1>>,
    report: StepReport,
}

/// Completes a report with the values read back, failing if training diverged.
fn finish(mut report: StepReport, loss: f64, grad_norm: f64) -> Result<StepReport> {
    if !loss.is_finite() || !grad_norm.is_finite() {
        return Err(CotoError::Diverged {
            step: report.step,
            loss,
            grad_norm,
        });
    }
    report.loss = loss;
    report.grad_norm = grad_norm;
    Ok(report)
}

fn read_error(error: burn::tensor::ExecutionError) -> CotoError {
    CotoError::Device(format!("reading a result from the device failed: {error:?}"))
}

/// Everything about a run's progress that is not a tensor: enough, with the parameters and
/// the optimizer moments, to continue the run exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken (also the learning-rate schedule's position).
    pub step: usize,
    /// Epoch of the data order.
    pub epoch: usize,
    /// Next position in the epoch's order.
    pub position: usize,
    /// The CoTo schedule's step, current draw and generator position.
    pub gates: GateState,
    /// AdamW's update count per parameter path.
    pub optimizer_steps: BTreeMap<String, u64>,
    /// The run's settings.
    pub config: TrainConfig,
}

/// A run's state: [`TrainerState`], the trainable parameters and the optimizer moments.
#[derive(Debug, Clone)]
pub struct TrainerSnapshot {
    /// Counters, draws and settings.
    pub state: TrainerState,
    /// Trainable parameters by module path.
    pub params: WeightMap,
    /// AdamW moments, `{path}#m` and `{path}#v`.
    pub moments: WeightMap,
}

/// A classifier with LoRA adapters, its data, and the optimizer and CoTo state of a run.
pub struct Trainer {
    config: TrainConfig,
    device: Device,
    model: BertClassifier,
    tokenizer: TextTokenizer,
    dataset: Dataset,
    train_tokens: Vec<Vec<u32>>,
    slots: Vec<AdapterSlot>,
    gates: GateController,
    optimizer: AdamW,
    scheduler: LrScheduler,
    order: EpochOrder,
    total_steps: usize,
    skipped: usize,
}

impl Trainer {
    /// Builds the classifier on `device` (made an autodiff device), adds adapters, tokenises
    /// the training texts and sets up the schedule for the whole run.
    pub fn new(checkpoint: Checkpoint, dataset: Dataset, config: TrainConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        if dataset.train.is_empty() || dataset.validation.is_empty() {
            return Err(CotoError::Data {
                source_name: "dataset".into(),
                message: format!(
                    "{} training and {} validation examples; both sets need at least one",
                    dataset.train.len(),
                    dataset.validation.len()
                ),
            });
        }
        if dataset.train.len() < config.batch_size {
            return Err(CotoError::Data {
                source_name: "dataset".into(),
                message: format!(
                    "the training set has {} examples, fewer than one batch of {}; lower --batch-size \
                     or add data",
                    dataset.train.len(),
                    config.batch_size
                ),
            });
        }
        let device = device.clone().autodiff();
        let Checkpoint {
            config: bert_config,
            weights,
            tokenizer,
        } = checkpoint;

        let mut init_rng = rng::seeded(config.seed, INIT_STREAM);
        let mut bert = BertModel::load(&bert_config, &weights, &device)?;
        drop(weights);
        let slots = inject_lora(&mut bert, &config.lora, &mut init_rng, &device)?;
        let model = BertClassifier::new(
            bert,
            &bert_config,
            dataset.labels.len(),
            config.pooling,
            &mut init_rng,
            &device,
        )?;

        let train_tokens = dataset
            .train
            .iter()
            .map(|example| tokenizer.encode_ids(&example.text))
            .collect::<Result<Vec<_>>>()?;
        let total_steps = config.total_steps(dataset.train.len());
        let groups = AdapterGroups::build(&config.grouping, &slots)?;
        let schedule = CotoSchedule::new(config.coto.clone(), total_steps)?;
        let gates = GateController::new(config.method, schedule, groups, config.seed);
        let optimizer = AdamW::new(AdamWConfig {
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        });
        let scheduler = LrScheduler::new(config.lr, config.warmup_ratio, total_steps, config.lr_schedule);
        let order = EpochOrder::new(dataset.train.len(), config.seed);

        Ok(Self {
            config,
            device,
            model,
            tokenizer,
            dataset,
            train_tokens,
            slots,
            gates,
            optimizer,
            scheduler,
            order,
            total_steps,
            skipped: 0,
        })
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The model being trained.
    pub fn model(&self) -> &BertClassifier {
        &self.model
    }

    /// The adapters, in gate order.
    pub fn slots(&self) -> &[AdapterSlot] {
        &self.slots
    }

    /// The CoTo gate controller.
    pub fn gates(&self) -> &GateController {
        &self.gates
    }

    /// The class names.
    pub fn labels(&self) -> &LabelMap {
        &self.dataset.labels
    }

    /// The data.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> usize {
        self.gates.step()
    }

    /// Optimizer steps in the whole run.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Whether every step of the run has been taken.
    pub fn is_done(&self) -> bool {
        self.step_count() >= self.total_steps
    }

    /// Takes one optimizer step: `grad_accum_steps` micro-batches of the training data under
    /// one CoTo draw, gradient clipping, an AdamW update, then a new draw. Reads the loss back
    /// synchronously; in a browser use [`Trainer::step_async`].
    pub fn step(&mut self) -> Result<StepReport> {
        let batches = self.next_batches();
        self.step_on(&batches)
    }

    /// [`Trainer::step`] without blocking on the device, for WebGPU in a browser.
    pub async fn step_async(&mut self) -> Result<StepReport> {
        let batches = self.next_batches();
        let computed = self.compute_step(&batches);
        let read = async |tensor: Option<Tensor<1>>| -> Result<f64> {
            match tensor {
                Some(t) => Ok(t.into_scalar_async::<f32>().await.map_err(read_error)? as f64),
                None => Ok(0.0),
            }
        };
        if self.config.on_nonfinite == NonFinite::Skip {
            let loss = read(Some(computed.loss.clone())).await?;
            let norm = read(computed.grad_norm.clone()).await?;
            return Ok(self.finish_checked(computed, loss, norm));
        }
        let (loss, norm) = (computed.loss.clone(), computed.grad_norm.clone());
        let report = self.apply_update(computed);
        finish(report, read(Some(loss)).await?, read(norm).await?)
    }

    /// Takes one optimizer step on the given micro-batches (token ids with their class ids)
    /// instead of the next training batches. Benchmarks use it with synthetic batches.
    pub fn step_on(&mut self, batches: &[(EncodedBatch, Vec<usize>)]) -> Result<StepReport> {
        let computed = self.compute_step(batches);
        let read = |tensor: Option<Tensor<1>>| tensor.map_or(0.0, |t| t.into_scalar::<f32>() as f64);
        if self.config.on_nonfinite == NonFinite::Skip {
            let (loss, norm) = (read(Some(computed.loss.clone())), read(computed.grad_norm.clone()));
            return Ok(self.finish_checked(computed, loss, norm));
        }
        let (loss, norm) = (computed.loss.clone(), computed.grad_norm.clone());
        let report = self.apply_update(computed);
        finish(report, read(Some(loss)), read(norm))
    }

    /// Steps skipped for a non-finite loss or gradient so far (with `on_nonfinite = skip`).
    pub fn skipped_steps(&self) -> usize {
        self.skipped
    }

    fn next_batches(&mut self) -> Vec<(EncodedBatch, Vec<usize>)> {
        (0..self.config.grad_accum_steps)
            .map(|_| {
                let indices = self.order.next_batch(self.config.batch_size);
                let labels = indices.iter().map(|&i| self.dataset.train[i].label).collect();
                (self.encode_train(&indices), labels)
            })
            .collect()
    }

    /// Applies the update of a step whose values were read first, or skips it (counting it)
    /// when they are not finite.
    fn finish_checked(&mut self, computed: ComputedStep, loss: f64, norm: f64) -> StepReport {
        if loss.is_finite() && norm.is_finite() {
            let mut report = self.apply_update(computed);
            report.loss = loss;
            report.grad_norm = norm;
            return report;
        }
        self.skipped += 1;
        tracing::warn!(step = computed.report.step, loss, grad_norm = norm, skipped = self.skipped, "skipped a non-finite step");
        self.gates.after_optimizer_step();
        let mut report = computed.report;
        report.loss = loss;
        report.grad_norm = norm;
        report
    }

    /// Runs the forward and backward passes of a step and clips the gradients, leaving the loss
    /// and gradient norm on the device.
    fn compute_step(&mut self, batches: &[(EncodedBatch, Vec<usize>)]) -> ComputedStep {
        let step = self.step_count();
        let gates = self.gates.gates(Mode::Train);
        let p = self.gates.p();
        let active_groups = self.gates.group_states().to_vec();
        // Dropout masks come from the device generator; seeding it per step makes each step
        // reproducible on its own, which a resumed run relies on.
        let step_seed = mix_seed(self.config.seed, step as u64);
        self.device.seed(step_seed);
        seed_masks(step_seed);

        let mut grads = ParamGrads::default();
        let mut loss_sum: Option<Tensor<1>> = None;
        let (mut tokens, mut examples) = (0, 0);
        for (batch, labels) in batches {
            let loss = self.loss(batch, labels, &gates) / batches.len() as f64;
            let value = loss.clone().inner();
            loss_sum = Some(match loss_sum {
                Some(sum) => sum + value,
                None => value,
            });
            let mut backward = loss.backward();
            grads.accumulate(ParamGrads::collect(&mut backward, &self.model));
            tokens += batch.token_count();
            examples += labels.len();
        }
        let grad_norm = grads.clip_global_norm(self.config.max_grad_norm);
        ComputedStep {
            grads,
            loss: loss_sum.unwrap_or_else(|| Tensor::zeros([1], &self.device.clone().without_autodiff())),
            grad_norm,
            report: StepReport {
                step: step + 1,
                loss: 0.0,
                lr: self.scheduler.lr(step),
                p,
                active_groups,
                grad_norm: 0.0,
                tokens,
                examples,
            },
        }
    }

    /// Updates the parameters with AdamW and draws new gates.
    fn apply_update(&mut self, computed: ComputedStep) -> StepReport {
        let model = self.model.clone();
        self.model = self.optimizer.step(model, computed.grads, computed.report.lr);
        self.gates.after_optimizer_step();
        computed.report
    }

    /// Captures the run's state after the last completed step.
    pub fn snapshot(&self) -> TrainerSnapshot {
        let (moments, optimizer_steps) = self.optimizer.export_moments();
        TrainerSnapshot {
            state: self.progress(optimizer_steps),
            params: trainable_params(&self.model),
            moments,
        }
    }

    /// Captures the run's state like [`Trainer::snapshot`], without blocking on the device (for
/// WebGPU in a browser).
    pub async fn snapshot_async(&self) -> Result<TrainerSnapshot> {
        let (moments, optimizer_steps) = self.optimizer.export_moments_async().await?;
        Ok(TrainerSnapshot {
            state: self.progress(optimizer_steps),
            params: trainable_params_async(&self.model).await?,
            moments,
        })
    }

    fn progress(&self, optimizer_steps: BTreeMap<String, u64>) -> TrainerState {
        TrainerState {
            step: self.step_count(),
            epoch: self.order.epoch,
            position: self.order.position,
            gates: self.gates.state(),
            optimizer_steps,
            config: self.config.clone(),
        }
    }

    /// Continues from `snapshot`: parameters, optimizer moments, CoTo draw and generator, data
    /// order and step count. The trainer must have been built with the snapshot's settings and
    /// the same data.
    pub fn restore(&mut self, snapshot: &TrainerSnapshot) -> Result<()> {
        if snapshot.state.config != self.config {
            return Err(CotoError::setting(
                "resume",
                "checkpoint",
                "the checkpoint was written with other training settings; resume with the settings it stores",
            ));
        }
        self.model = load_trainable_params(self.model.clone(), &snapshot.params)?;
        let inner = self.device.clone().without_autodiff();
        self.optimizer
            .import_moments(&snapshot.moments, &snapshot.state.optimizer_steps, &inner)?;
        self.gates.restore(&snapshot.state.gates);
        self.order.seek(snapshot.state.epoch, snapshot.state.position);
        Ok(())
    }

    /// Evaluates on the validation set with every adapter on. The training draw is untouched.
    pub fn evaluate(&self) -> Result<EvalReport> {
        let predictions = self.predict_examples(&self.dataset.validation)?;
        Ok(self.report_eval(&predictions))
    }

    /// [`Trainer::evaluate`] without blocking on the device, for WebGPU in a browser.
    pub async fn evaluate_async(&self) -> Result<EvalReport> {
        let texts: Vec<&str> = self.dataset.validation.iter().map(|e| e.text.as_str()).collect();
        let predictions =
            predict_texts_async(&self.model.valid(), &self.tokenizer, &texts, self.config.eval_batch_size).await?;
        Ok(self.report_eval(&predictions))
    }

    fn report_eval(&self, predictions: &Predictions) -> EvalReport {
        EvalReport {
            step: self.step_count(),
            metrics: score(predictions, &self.dataset.validation, self.dataset.labels.len()),
        }
    }

    /// Logits and predicted classes for `examples`, with every adapter on.
    pub fn predict_examples(&self, examples: &[Example]) -> Result<Predictions> {
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        predict_texts(&self.model.valid(), &self.tokenizer, &texts, self.config.eval_batch_size)
    }

    fn encode_train(&self, indices: &[usize]) -> EncodedBatch {
        let ids: Vec<&[u32]> = indices.iter().map(|&i| self.train_tokens[i].as_slice()).collect();
        self.tokenizer.pad_batch(&ids)
    }

    fn loss(&self, batch: &EncodedBatch, labels: &[usize], gates: &Gates) -> Tensor<1> {
        let (ids, mask) = batch.to_tensors(&self.device);
        let logits = self.model.forward(ids, mask, gates);
        let classes = self.dataset.labels.len();
        let mut one_hot = vec![0f32; labels.len() * classes];
        for (row, &label) in labels.iter().enumerate() {
            one_hot[row * classes + label] = 1.0;
        }
        let targets = Tensor::<2>::from_data(TensorData::new(one_hot, [labels.len(), classes]), &self.device);
        (log_softmax(logits, 1) * targets).sum_dim(1).mean().neg()
    }
}

/// Combines the run seed and a step number into one seed (SplitMix64's finaliser), so
/// neighbouring steps get unrelated dropout masks.
fn mix_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
