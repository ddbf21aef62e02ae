//! The WASM package's JS API under Node.js, with no GPU: `web/e2e/api.test.mjs` trains a tiny
//! model on the CPU fallback and feeds the API bad inputs, which must reject with messages.
//!
//! Needs `web/pkg` (`bash web/build.sh`) and Node.js (`.ci/run` provides both). Set
//! `COTO_SKIP_BROWSER=1` to skip, as for the browser test.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};

#[test]
fn js_api_trains_and_rejects_bad_input() {
    if std::env::var_os("COTO_SKIP_BROWSER").is_some() {
        eprintln!("COTO_SKIP_BROWSER is set; skipping the JS API test");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(root.join("web/pkg/coto.js").is_file(), "web/pkg is missing; build it with `bash web/build.sh`");

    let dir = temp_dir("wasm-api");
    let model = write_tiny_bert(&dir.join("model"), 5);
    let data = dir.join("data.tsv");
    std::fs::write(&data, synthetic_lines(80, 4).join("\n")).unwrap();

    let output = Command::new("node")
        .args(["--test", "web/e2e/api.test.mjs"])
        .current_dir(&root)
        .env("COTO_TEST_MODEL", &model)
        .env("COTO_TEST_DATA", &data)
        .output()
        .expect("node runs; install Node.js or set COTO_SKIP_BROWSER=1");
    assert!(
        output.status.success(),
        "the JS API tests failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
