// The WASM package's JS API under Node.js, where there is no WebGPU: `Trainer` falls back to
// the CPU and must train, evaluate, predict and export, and every bad input must reject its
// promise with an Error that names the problem, never trap.
//
// Run by `tests/wasm_api.rs`, which writes a tiny model and data set and passes their paths:
//   COTO_TEST_MODEL=DIR COTO_TEST_DATA=FILE node --test web/e2e/api.test.mjs

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { Trainer, initSync } from "../pkg/coto.js";

initSync({ module: readFileSync(new URL("../pkg/coto_bg.wasm", import.meta.url)) });

const modelDir = process.env.COTO_TEST_MODEL;
const dataFile = process.env.COTO_TEST_DATA;
assert.ok(modelDir, "COTO_TEST_MODEL is not set; set it to a model directory");
assert.ok(dataFile, "COTO_TEST_DATA is not set; set it to a label-first data file");

const modelFiles = () => ({
  config: readFileSync(path.join(modelDir, "config.json")),
  weights: readFileSync(path.join(modelDir, "model.safetensors")),
  tokenizer: readFileSync(path.join(modelDir, "tokenizer.json")),
  name: "tiny-bert",
});
const data = () => ({ text: readFileSync(dataFile, "utf8"), format: "label-first" });
const settings = { method: "coto", lr: 0.01, max_steps: 6, batch_size: 8, max_length: 16 };

test("trains, evaluates, predicts and exports on the CPU", async () => {
  const trainer = await Trainer.create(modelFiles(), data(), settings, "auto");
  assert.match(trainer.device, /CPU/);
  assert.equal(trainer.totalSteps, 6);
  assert.deepEqual([...trainer.labels].sort(), ["neg", "pos"]);

  const first = await trainer.step();
  assert.equal(first.step, 1);
  assert.ok(Number.isFinite(first.loss), `loss ${first.loss}`);

  const seen = [];
  const last = await trainer.train(10, (report) => seen.push(report.step));
  assert.deepEqual(seen, [2, 3, 4, 5, 6], "train() stops at the end of the run");
  assert.equal(last.step, 6);
  assert.equal(trainer.stepCount, 6);

  const evaluation = await trainer.evaluate();
  assert.equal(evaluation.metrics.examples, trainer.datasetSizes[1]);
  assert.ok(evaluation.metrics.accuracy >= 0, `accuracy ${evaluation.metrics.accuracy}`);
  assert.ok(evaluation.metrics.accuracy <= 1, `accuracy ${evaluation.metrics.accuracy}`);

  const prediction = await trainer.predict("good bright warm day");
  assert.ok(trainer.labels.includes(prediction.label), prediction.label);
  assert.equal(prediction.logits.length, 2);

  const files = await trainer.exportAdapter();
  const config = JSON.parse(files["adapter_config.json"]);
  assert.equal(config.peft_type, "LORA");
  assert.ok(files["adapter_model.safetensors"] instanceof Uint8Array);
  assert.ok(files["adapter_model.safetensors"].length > 0);
  assert.equal(JSON.parse(files["coto_run.json"]).labels.length, 2);
  trainer.dispose();
});

test("restoreState continues a run exactly", async () => {
  const first = await Trainer.create(modelFiles(), data(), settings, "cpu");
  await first.train(3);
  const state = await first.saveState();
  assert.ok(state instanceof Uint8Array, "saveState() resolves to a Uint8Array");
  assert.ok(state.length > 0, "the saved state is not empty");
  const uninterrupted = [];
  await first.train(3, (report) => uninterrupted.push(report.loss));

  const second = await Trainer.create(modelFiles(), data(), settings, "cpu");
  assert.equal(await second.restoreState(state), 3);
  assert.equal(second.stepCount, 3);
  const continued = [];
  await second.train(3, (report) => continued.push(report.loss));
  assert.deepEqual(continued, uninterrupted, "the CPU backend is deterministic, so the losses match exactly");
  assert.deepEqual((await second.predict("a cold grim dark day")).logits, (await first.predict("a cold grim dark day")).logits);

  const other = await Trainer.create(modelFiles(), data(), { ...settings, lr: 0.02 }, "cpu");
  await assert.rejects(other.restoreState(state), /other training settings/);
  await assert.rejects(other.restoreState(new Uint8Array([1, 2, 3])), /not a saved trainer state/);
  for (const trainer of [first, second, other]) {
    trainer.dispose();
  }
});

// Each case: what to change, and the message the rejection must contain.
const badInputs = [
  ["a device that does not exist", { device: "tpu" }, /unknown device "tpu"/],
  ["WebGPU where there is none", { device: "webgpu" }, /does not expose WebGPU/],
  ["an out-of-range learning rate", { settings: { ...settings, lr: -1 } }, /lr/],
  ["an unknown data format", { data: { text: "x", format: "xml" } }, /unknown data format "xml"/],
  ["an empty data file", { data: { text: "", format: "label-first" } }, /empty|no records|no rows/i],
  ["config.json that is not JSON", { model: { ...modelFiles(), config: new Uint8Array([123, 58]) } }, /config\.json/],
  ["a truncated model.safetensors", { model: { ...modelFiles(), weights: new Uint8Array(10) } }, /model\.safetensors/],
  ["a tokenizer.json that is not a tokenizer", { model: { ...modelFiles(), tokenizer: new TextEncoder().encode("{}") } }, /tokenizer\.json/],
];

for (const [name, change, message] of badInputs) {
  test(`rejects ${name}`, async () => {
    const args = { model: modelFiles(), data: data(), settings, device: "auto", ...change };
    await assert.rejects(Trainer.create(args.model, args.data, args.settings, args.device), (error) => {
      assert.ok(error instanceof Error, `a ${typeof error} was thrown, not an Error`);
      assert.match(error.message, message);
      return true;
    });
  });
}
