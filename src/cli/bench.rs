//! `coto bench`: training throughput of plain LoRA and of CoTo at fixed p, on synthetic
//! full-length batches of the real model.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use coto::coto::{CotoConfig, Method};
use coto::data::{Dataset, Example, LabelMap};
use coto::model::EncodedBatch;
use coto::rng;
use coto::train::{TrainConfig, Trainer};
use rand::Rng;
use serde::Serialize;

use std::path::Path;

use coto::device::ComputeDevice;

use super::bench_kernels::{LayerShape, bench_layers, compare_training};
use super::common::{DeviceArg, load_checkpoint, model_dir};
use super::train::VariantArg;

/// Arguments of `coto bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Hugging Face BERT checkpoint directory. Default: the cached all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    model: Option<std::path::PathBuf>,
    /// Devices to measure; repeat the flag for several.
    #[arg(long, value_enum, default_values_t = vec![DeviceArg::Auto])]
    device: Vec<DeviceArg>,
    /// Examples per step.
    #[arg(long, value_name = "N", default_value_t = 16)]
    batch_size: usize,
    /// Tokens per example (every position is a real token, no padding).
    #[arg(long, value_name = "N", default_value_t = 128)]
    seq_len: usize,
    /// Untimed steps before measuring.
    #[arg(long, value_name = "N", default_value_t = 3)]
    warmup: usize,
    /// Timed steps per row.
    #[arg(long, value_name = "N", default_value_t = 10)]
    steps: usize,
    /// CoTo activation probabilities to measure, besides plain LoRA.
    #[arg(long, value_name = "P", value_delimiter = ',', default_values_t = vec![0.25, 0.5, 1.0])]
    p: Vec<f64>,
    /// LoRA rank.
    #[arg(long, value_name = "R", default_value_t = 8)]
    rank: usize,
    /// Adapter variants to measure, comma-separated (lora, rslora, dora, pissa, hira).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![VariantArg::Lora])]
    variant: Vec<VariantArg>,
    /// Comma-separated target modules.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = vec!["query".to_string(), "value".to_string()])]
    target_modules: Vec<String>,
    /// Compare the fused WGSL LoRA kernels with composed burn operations (wgpu devices only):
    /// the LoRA layer alone at `batch-size × seq-len` tokens, 384 → 384 and 384 → 1536, then a
    /// full training step of plain LoRA.
    #[arg(long)]
    kernels: bool,
    /// Print one JSON object per row instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measured configuration.
#[derive(Debug, Serialize)]
struct BenchRow {
    variant: String,
    method: String,
    p: f64,
    device: String,
    steps_per_s: f64,
    tokens_per_s: f64,
    peak_memory_mb: Option<f64>,
    mean_active_adapters: f64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let dir = model_dir(args.model.as_deref())?;
    let mut rows = Vec::new();
    for device_arg in &args.device {
        let device = device_arg.select()?;
        if args.kernels {
            run_kernels(&args, &dir, &device)?;
            continue;
        }
        let mut cases = Vec::new();
        for &variant in &args.variant {
            cases.push((variant, Method::Lora, 1.0));
            cases.extend(args.p.iter().map(|&p| (variant, Method::Coto, p)));
        }
        for (variant, method, p) in cases {
            let row = time_training(&args, &dir, &device, variant, method, p)?;
            if args.json {
                println!("{}", serde_json::to_string(&row)?);
            }
            rows.push(row);
        }
    }
    if !args.json && !rows.is_empty() {
        print_table(&rows, &args);
    }
    Ok(())
}

/// Trains `steps` timed steps (after `warmup`) on one synthetic full-length batch.
fn time_training(args: &BenchArgs, dir: &Path, device: &ComputeDevice, variant: VariantArg, method: Method, p: f64) -> Result<BenchRow> {
        let checkpoint = load_checkpoint(&dir, args.seq_len)?;
        let batch = synthetic_batch(&args, checkpoint.config.vocab_size);
        let labels: Vec<usize> = (0..args.batch_size).map(|i| i % 2).collect();
        let config = TrainConfig {
            method,
            coto: CotoConfig {
                initial_p: p,
                final_p: p,
                ..CotoConfig::default()
            },
            lora: {
                let mut lora = coto::lora::LoraConfig {
                    r: args.rank,
                    target_modules: args.target_modules.clone(),
                    ..Default::default()
                };
                variant.variant().apply(&mut lora);
                lora
            },
            max_steps: Some(args.warmup + args.steps),
            max_length: args.seq_len,
            batch_size: args.batch_size,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(checkpoint, placeholder_dataset(args.batch_size), config, &device.device)?;
        let batches = vec![(batch.clone(), labels)];
        for _ in 0..args.warmup {
            trainer.step_on(&batches)?;
        }
        let started = Instant::now();
        let mut active = 0usize;
        for _ in 0..args.steps {
            let report = trainer.step_on(&batches)?;
            active += report.active_groups.iter().filter(|&&on| on).count();
        }
        device.device.sync().map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let groups = trainer.gates().groups().len().max(1);
        let adapters_per_group = trainer.slots().len() as f64 / groups as f64;
        let row = BenchRow {
            variant: format!("{:?}", variant.variant()).to_lowercase(),
            method: format!("{method:?}").to_lowercase(),
            p,
            device: device.to_string(),
            steps_per_s: args.steps as f64 / seconds,
            tokens_per_s: (args.steps * batch.token_count()) as f64 / seconds,
            peak_memory_mb: peak_rss_mb(),
            mean_active_adapters: active as f64 * adapters_per_group / args.steps as f64,
        };
    Ok(row)
}

/// `--kernels`: the layer alone at MiniLM's shapes, then full training steps, fused and composed.
fn run_kernels(args: &BenchArgs, dir: &Path, device: &ComputeDevice) -> Result<()> {
    let tokens = args.batch_size * args.seq_len;
    let shapes = [384, 1536].map(|outputs| LayerShape { tokens, inputs: 384, outputs });
    bench_layers(device, &shapes, args.rank, args.warmup, args.steps)?;
    let (composed, fused) = compare_training(device, || time_training(args, dir, device, VariantArg::Lora, Method::Lora, 1.0))?;
    println!();
    println!(
        "full training step, plain LoRA, batch {} × {} tokens, r {}, targets {}: composed {:.3} steps/s, fused {:.3} steps/s ({:.2}x)",
        args.batch_size,
        args.seq_len,
        args.rank,
        args.target_modules.join(","),
        composed.steps_per_s,
        fused.steps_per_s,
        fused.steps_per_s / composed.steps_per_s
    );
    Ok(())
}

fn synthetic_batch(args: &BenchArgs, vocab_size: usize) -> EncodedBatch {
    let mut rng = rng::seeded(0, 0);
    let mut input_ids = Vec::with_capacity(args.batch_size * args.seq_len);
    for _ in 0..args.batch_size {
        input_ids.push(101);
        input_ids.extend((1..args.seq_len - 1).map(|_| rng.random_range(1000..vocab_size as i64)));
        input_ids.push(102);
    }
    EncodedBatch {
        attention_mask: vec![1; input_ids.len()],
        input_ids,
        batch: args.batch_size,
        seq: args.seq_len,
    }
}

/// Builds a dataset of one batch. The trainer checks that one exists, and the benchmark feeds
/// its own batches.
fn placeholder_dataset(batch_size: usize) -> Dataset {
    let example = |label| Example {
        text: "benchmark".into(),
        label,
    };
    Dataset {
        train: (0..batch_size).map(|i| example(i % 2)).collect(),
        validation: vec![example(0)],
        labels: LabelMap::from_ordered(vec!["a".into(), "b".into()]),
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn print_table(rows: &[BenchRow], args: &BenchArgs) {
    println!(
        "batch {} x {} tokens, r {}, targets {}, {} timed steps after {} warm-up",
        args.batch_size,
        args.seq_len,
        args.rank,
        args.target_modules.join(","),
        args.steps,
        args.warmup
    );
    println!(
        "{:<7} {:<6} {:>5} {:>10} {:>12} {:>10} {:>15}  device",
        "variant", "method", "p", "steps/s", "tokens/s", "adapters", "peak RSS (MiB)"
    );
    for row in rows {
        let baseline = rows
            .iter()
            .find(|r| r.variant == row.variant && r.method == "lora")
            .map_or(1.0, |r| r.steps_per_s);
        println!(
            "{:<7} {:<6} {:>5.2} {:>10.3} {:>12.0} {:>10.1} {:>15}  {}  ({:.2}x plain training)",
            row.variant,
            row.method,
            row.p,
            row.steps_per_s,
            row.tokens_per_s,
            row.mean_active_adapters,
            row.peak_memory_mb.map_or("-".into(), |m| format!("{m:.0}")),
            row.device,
            row.steps_per_s / baseline
        );
    }
}
