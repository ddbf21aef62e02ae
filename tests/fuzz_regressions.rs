//! Replays the fuzz targets' seed inputs (`fuzz/seeds/`) and every input a fuzzing run found
//! to crash (`tests/fixtures/fuzz/`), through the same code the targets run, so that fixed
//! crashes stay fixed without a fuzzer.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_logic;

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 3] = [
    ("data_readers", fuzz_logic::data_readers),
    ("config_readers", fuzz_logic::config_readers),
    ("adapter_files", fuzz_logic::adapter_files),
];

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn fuzz_inputs_do_not_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let seeds = inputs(&root.join("fuzz/seeds").join(name));
        assert!(!seeds.is_empty(), "no seed inputs for the fuzz target {name}");
        for path in seeds.iter().chain(&inputs(&root.join("tests/fixtures/fuzz").join(name))) {
            let data = std::fs::read(path).unwrap();
            eprintln!("{name}: {}", path.display());
            target(&data);
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len());
}
