//! A real `coto train` process killed with SIGKILL at random points, or interrupted with
//! SIGINT, resumes from its last checkpoint and ends with the same adapter as an uninterrupted
//! run: nothing finished is lost, and nothing half-written is loaded.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};
use rand::Rng;

fn train_command(model: &Path, data: &Path, output: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coto"));
    command
        .args(["train", "--device", "cpu", "--max-length", "32", "--batch-size", "16", "--epochs", "50"])
        .args(["--max-steps", "400", "--save-every", "5", "--eval-every", "0", "--lr", "2e-3"])
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--output")
        .arg(output)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn resume_command(output: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coto"));
    command
        .args(["train", "--device", "cpu", "--resume"])
        .arg(output)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn has_checkpoint(output: &Path) -> bool {
    coto::train::latest_checkpoint(output).is_ok()
}

/// Returns the step of the newest complete checkpoint, if any.
fn latest_step(output: &Path) -> Option<u64> {
    let latest = coto::train::latest_checkpoint(output).ok()?;
    latest.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
}

/// Waits until the run has checkpointed step `target` or later. Returns false when the process
/// ended first. Progress, not wall time, decides when to strike, so a fast machine does not
/// let the run finish before the signal.
fn wait_for_step(child: &mut Child, output: &Path, target: u64) -> bool {
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if latest_step(output).is_some_and(|step| step >= target) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn finish(mut command: Command) -> Output {
    command.output().expect("coto runs")
}

fn setup(name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(name);
    let model = write_tiny_bert(&dir.join("model"), 3);
    let data = dir.join("data.tsv");
    std::fs::write(&data, synthetic_lines(200, 8).join("\n")).unwrap();
    (dir, model, data)
}

fn adapter_bytes(output: &Path) -> Vec<u8> {
    std::fs::read(output.join("adapter_model.safetensors")).expect("the run saved its adapter")
}

#[test]
fn sigkill_at_random_points_then_resume_matches_uninterrupted() {
    let (dir, model, data) = setup("kill-resume");
    let reference = dir.join("reference");
    let output = finish(train_command(&model, &data, &reference));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let run = dir.join("killed");
    let mut rng = coto::rng::seeded(17, 0);
    let mut kills = 0;
    // One kill in each stretch of the run, at a random step and a random moment after it
    // (during the next steps' compute or in the middle of writing a checkpoint).
    for stretch in [20..80, 110..170, 200..260, 290..350] {
        let command = if has_checkpoint(&run) { resume_command(&run) } else { train_command(&model, &data, &run) };
        let mut child = { command }.spawn().unwrap();
        let target = rng.random_range(stretch);
        let reached = wait_for_step(&mut child, &run, target);
        if !reached {
            let output = child.wait_with_output().unwrap();
            panic!("the run ended before step {target} (a resumed run must go on checkpointing): {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // Whatever the moment of the kill, the newest checkpoint is complete and loads.
        if has_checkpoint(&run) {
            let latest = coto::train::latest_checkpoint(&run).unwrap();
            coto::train::load_checkpoint(&latest).expect("the last checkpoint loads after SIGKILL");
            coto::adapter::load_adapter(&latest).expect("the last checkpoint loads as an adapter");
        }
    }
    assert!(kills >= 2, "the run finished before it could be killed twice; make it longer");

    let command = if has_checkpoint(&run) { resume_command(&run) } else { train_command(&model, &data, &run) };
    let output = finish(command);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(adapter_bytes(&run) == adapter_bytes(&reference), "the resumed run ended with a different adapter");
}

#[test]
fn sigint_writes_checkpoint_and_names_resume_command() {
    let (dir, model, data) = setup("sigint-resume");
    let run = dir.join("interrupted");
    let mut child = train_command(&model, &data, &run).spawn().unwrap();
    assert!(wait_for_step(&mut child, &run, 10), "the run ended before its tenth step");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the interrupted run reported success");
    assert!(message.contains("interrupted after step"), "{message}");
    assert!(message.contains("coto train --resume"), "{message}");
    assert!(has_checkpoint(&run), "no checkpoint after SIGINT");

    let output = finish(resume_command(&run));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reference = dir.join("reference");
    let output = finish(train_command(&model, &data, &reference));
    assert!(output.status.success());
    assert!(adapter_bytes(&run) == adapter_bytes(&reference), "the resumed run ended with a different adapter");
}
