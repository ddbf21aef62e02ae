//! The web page end to end in headless Chromium with WebGPU on SwiftShader (and in Firefox on
//! the adapter it finds): `coto serve` hosts
//! the page, the WASM package and a model; `web/e2e/drive.mjs` drives the page through
//! chromedriver; the adapter the page exports must load natively with the same predictions.
//!
//! Needs `web/pkg` (`bash web/build.sh`), Node.js, and Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them). Set `COTO_SKIP_BROWSER=1` to skip on a machine without them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};

const TEXTS: [&str; 3] = ["good bright warm day", "a cold grim dark day", "the day was so so"];

/// `coto serve` on a free port, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(model: &Path, data: &Path) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_coto"))
            .args(["serve", "--port", "0", "--web"])
            .arg(root.join("web"))
            .arg("--model")
            .arg(model)
            .arg("--data")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("coto serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("serving ").expect("coto serve prints its URL").to_string();
        Self { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip() -> bool {
    if std::env::var_os("COTO_SKIP_BROWSER").is_some() {
        eprintln!("COTO_SKIP_BROWSER is set; skipping the browser test");
        return true;
    }
    let package = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/pkg/coto.js");
    assert!(package.is_file(), "web/pkg is missing; build it with `bash web/build.sh`");
    false
}

/// Runs the driver with `extra` arguments and returns its result.json.
fn drive(url: &str, out: &Path, timeout_s: u32, extra: &[&str]) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("node");
    command
        .arg(root.join("web/e2e/drive.mjs"))
        .args(["--url", url, "--timeout", &timeout_s.to_string(), "--out"])
        .arg(out)
        .args(extra);
    for text in TEXTS {
        command.args(["--text", text]);
    }
    let output = command.output().expect("node runs");
    let result_path = out.join("result.json");
    assert!(
        result_path.is_file(),
        "the driver wrote no result: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(result_path).unwrap()).unwrap();
    assert!(
        output.status.success(),
        "the page run failed: {}\n{}",
        result["error"],
        String::from_utf8_lossy(&output.stderr)
    );
    result
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Checks the run's report (finished on a device named `device_prefix`…) and that the exported
/// adapter predicts natively what the page predicted.
fn check_run(
    result: &serde_json::Value,
    out: &Path,
    model: &Path,
    max_length: usize,
    logit_tolerance: f64,
    device_prefix: &str,
) {
    assert_eq!(result["status"], "done");
    let device = result["device"].as_str().unwrap_or_default();
    assert!(device.starts_with(device_prefix), "the page reports {device}, not a {device_prefix} device");
    let losses: Vec<f64> = result["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let quarter = (losses.len() / 4).max(1);
    let (first, last) = (mean(&losses[..quarter]), mean(&losses[losses.len() - quarter..]));
    assert!(last < first, "the training loss did not fall in the browser: {first:.4} -> {last:.4}");
    assert!(out.join("screenshot.png").is_file(), "no screenshot");

    let adapter = out.join("adapter");
    for file in ["adapter_model.safetensors", "adapter_config.json", "coto_run.json"] {
        assert!(adapter.join(file).is_file(), "the page exported no {file}");
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_coto"));
    command
        .args(["predict", "--device", "cpu", "--max-length", &max_length.to_string(), "--adapter"])
        .arg(&adapter)
        .arg("--model")
        .arg(model)
        .args(TEXTS)
        .env("RUST_LOG", "warn");
    let output = command.output().unwrap();
    assert!(output.status.success(), "coto predict failed: {}", String::from_utf8_lossy(&output.stderr));
    let native: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let page = result["predictions"].as_array().unwrap();
    assert_eq!(native.len(), page.len());
    for (native, page) in native.iter().zip(page) {
        assert_eq!(native["text"], page["text"]);
        assert_eq!(native["label"], page["label"], "labels differ for {}", native["text"]);
        for (a, b) in native["logits"].as_array().unwrap().iter().zip(page["logits"].as_array().unwrap()) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= logit_tolerance, "logits differ for {}: native {a}, page {b}", native["text"]);
        }
    }
}

/// URL parameters of the tiny model's 32-step run.
const TINY_RUN: &str = "steps=32&epochs=4&batch=8&maxLength=16&evalEvery=16&lr=0.01&autostart=1";

/// Writes a tiny BERT and a synthetic data set under a new `name` directory, serves them, and
/// drives the page with the URL parameters `query` and the driver arguments `extra`. Returns
/// the driver's result, its output directory and the model directory.
fn run_tiny_page(name: &str, query: &str, extra: &[&str]) -> (serde_json::Value, PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let model = write_tiny_bert(&dir.join("model"), 4);
    let data = dir.join("data.tsv");
    std::fs::write(&data, synthetic_lines(160, 5).join("\n")).unwrap();
    let server = Server::start(&model, &data);
    let out = dir.join("run");
    let result = drive(&format!("{}?{query}", server.url), &out, 900, extra);
    drop(server);
    (result, out, model)
}

#[test]
fn page_trains_tiny_model_on_webgpu() {
    if skip() {
        return;
    }
    let (result, out, model) = run_tiny_page("browser-tiny", TINY_RUN, &[]);
    // WebGPU and the CPU backend round differently; 1e-4 is far below the logits' spread.
    check_run(&result, &out, &model, 16, 1e-4, "WebGPU");
}

/// The same run in Firefox, driven through puppeteer-core (`npm ci --prefix web/e2e`), on the
/// WebGPU adapter Firefox finds (Mesa's llvmpipe through Vulkan on a machine without a GPU).
#[test]
fn page_trains_tiny_model_in_firefox() {
    if skip() {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("web/e2e/node_modules/puppeteer-core").is_dir(),
        "puppeteer-core is missing; install it with `npm ci --prefix web/e2e`"
    );
    assert!(
        Path::new("/usr/bin/firefox-esr").is_file(),
        "/usr/bin/firefox-esr is missing; install Debian's firefox-esr"
    );
    let (result, out, model) = run_tiny_page("browser-firefox", TINY_RUN, &["--browser", "firefox"]);
    check_run(&result, &out, &model, 16, 1e-4, "WebGPU");
}

/// The GPU is lost mid-run: the driver destroys the page's GPUDevice, which WebGPU reports as
/// lost. The page reports it, keeps the state of a finished step and continues from it on the
/// CPU when asked. The finished adapter still predicts natively what the page predicts.
#[test]
fn page_continues_on_cpu_after_gpu_loss() {
    if skip() {
        return;
    }
    let query = "steps=24&epochs=4&batch=8&maxLength=16&evalEvery=12&lr=0.01&autostart=1";
    let (result, out, model) = run_tiny_page("browser-lost", query, &["--lose-gpu-at", "6"]);

    let recovery = &result["recovery"];
    let lost_at = recovery["lostAtStep"].as_u64().expect("the driver destroyed the GPU device");
    let resumed_from = recovery["continuedFrom"].as_u64().expect("the page offered to continue");
    assert!((1..=lost_at).contains(&resumed_from), "continued from step {resumed_from}, lost at {lost_at}");
    let message = recovery["message"].as_str().unwrap_or_default();
    assert!(message.contains("GPU device was lost"), "the page's message: {message}");
    assert!(message.contains(&format!("after step {resumed_from}")), "the page's message: {message}");

    let history: Vec<&str> = result["deviceHistory"].as_array().unwrap().iter().filter_map(|d| d.as_str()).collect();
    assert_eq!(history.len(), 2, "devices used: {history:?}");
    assert!(history[0].starts_with("WebGPU"), "devices used: {history:?}");
    assert!(history[1].starts_with("CPU"), "devices used: {history:?}");
    assert_eq!(result["stepCount"], 24);
    assert_eq!(result["losses"].as_array().unwrap().len(), 24, "one loss per step, none twice");
    check_run(&result, &out, &model, 16, 1e-4, "CPU");
}

/// The real MiniLM in the browser: 12 steps take about 9 minutes on SwiftShader (about 30 s a
/// step), too slow for every run, so run it by hand with
/// `cargo test --release --test browser -- --ignored`.
#[test]
#[ignore]
fn page_trains_minilm_on_webgpu() {
    if skip() {
        return;
    }
    let model = coto::assets::ensure(&coto::assets::MINILM).unwrap();
    let data = coto::assets::ensure(&coto::assets::SMS_SPAM).unwrap().join(coto::assets::SMS_SPAM.files[0].name);
    let dir = temp_dir("browser-minilm");
    let slice: Vec<String> = std::fs::read_to_string(&data).unwrap().lines().take(400).map(str::to_string).collect();
    let data = dir.join("spam.tsv");
    std::fs::write(&data, slice.join("\n")).unwrap();
    let server = Server::start(&model, &data);
    let url = format!("{}?steps=12&batch=4&maxLength=32&evalEvery=0&lr=0.002&autostart=1", server.url);
    let out = dir.join("run");
    let started = std::time::Instant::now();
    let result = drive(&url, &out, 3000, &[]);
    drop(server);
    eprintln!("MiniLM in the browser: {:.0} s, {} steps/s", started.elapsed().as_secs_f64(), result["stepsPerSecond"]);
    check_run(&result, &out, &model, 32, 1e-3, "WebGPU");
}
