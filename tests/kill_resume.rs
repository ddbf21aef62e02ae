//! A real `coto train` process killed with SIGKILL at random points, or interrupted with
//! SIGINT, resumes from its last checkpoint and ends with the same adapter as an uninterrupted
//! run: nothing finished is lost, and nothing half-written is loaded.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};
use rand::Rng;

fn train_command(model: &Path, data: &Path, output: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coto"));
    command
        .args(["train", "--device", "cpu", "--max-length", "32", "--batch-size", "16", "--epochs", "50"])
        .args(["--max-steps", "300", "--save-every", "5", "--eval-every", "0", "--lr", "2e-3"])
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
    for _ in 0..4 {
        let command = if has_checkpoint(&run) { resume_command(&run) } else { train_command(&model, &data, &run) };
        let mut child = { command }.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..2500)));
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
    let child = train_command(&model, &data, &run).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
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
