// The coto training page: reads the settings form, drives a `Trainer` from the WASM package
// (pkg/coto.js) in small chunks of steps, and draws the run on plain 2D canvases.
//
// Automated tests read the page's state from `window.cotoPage` (see `page` below).

const PACKAGE_URL = "./pkg/coto.js";
const MANIFEST_URL = "/assets/manifest.json";

// Each `trainer.train(k)` call takes about this long, so that Stop responds quickly while
// the overhead per call stays small. The page stays responsive regardless, because the
// package yields to the browser between steps.
const TARGET_CHUNK_SECONDS = 0.5;
const MAX_STEPS_PER_CHUNK = 5;

// Steps/s is measured over this many of the latest steps, so that the first step, which
// compiles the GPU shaders, stops counting after a while.
const RATE_WINDOW_STEPS = 20;

// The page keeps the run's state (adapter, optimizer moments, CoTo draw) at most this many
// seconds of training apart, so that a lost GPU costs at most that much work. Reading the
// state back costs one GPU readback per parameter and per optimizer moment.
const KEEP_STATE_SECONDS = 5;

const WEBGPU_MISSING_MESSAGE =
  "WebGPU is not available in this browser; training runs on the CPU, which is slower. " +
  "Use a current Chromium or Firefox with WebGPU enabled to use the GPU.";

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------
// Page state
// ---------------------------------------------------------------------------------------

/**
 * State for automated tests, updated as the page works. `predict` and
 * `exportAdapterBase64` wait for any step in progress, so they can be called at any time
 * after the first step.
 */
const page = {
  status: "loading",
  error: null,
  device: null,
  method: null,
  totalSteps: 0,
  stepCount: 0,
  groupCount: 0,
  labels: [],
  datasetSizes: null,
  losses: [],
  evaluations: [],
  stepsPerSecond: null,
  /** Step of the last state kept for recovery (0 before the first). */
  keptStateStep: 0,
  /** After a lost GPU: `{reason, message, step}`, where `step` is the step the run can continue from. */
  deviceLost: null,
  /** Devices the run used, in order, e.g. `["WebGPU (…)", "CPU (…)"]`. */
  deviceHistory: [],
  /** The GPUDevices the package created on this page; tests destroy them to simulate a lost GPU. */
  gpuDevices: [],
  predict: (text) => predictText(text),
  exportAdapterBase64: () => exportAdapterBase64(),
};
window.cotoPage = page;

/** The loaded WASM package module, or null until it has loaded. */
let wasmPackage = null;
/** Number of times the package was imported afresh after a crash of its instance. */
let packageReloads = 0;
/** True after the package's WebAssembly instance trapped. A trapped instance must not be used again. */
let packageCrashed = false;

/** The parsed /assets/manifest.json, or null when it is not served. */
let manifest = null;

/** The current `Trainer`, or null. */
let trainer = null;
/** False once the trainer failed in a way that leaves it unusable. */
let trainerUsable = false;

/** The current run's bookkeeping (see `createRunState`), or null before the first run. */
let run = null;

// The Trainer accepts one call at a time and rejects a second one with "busy", so every
// call goes through this queue. Predictions requested during training run between chunks.
let callQueue = Promise.resolve();

function exclusive(task) {
  const result = callQueue.then(task);
  callQueue = result.catch(() => {});
  return result;
}

function createRunState(created, inputs) {
  const totalSteps = created.totalSteps;
  const schedule = new Float64Array(totalSteps + 1);
  for (let step = 0; step <= totalSteps; step += 1) {
    schedule[step] = created.scheduleP(step);
  }
  return {
    inputs,
    method: inputs.settings.method,
    evalEvery: inputs.settings.eval_every,
    summary: inputs.summary,
    deviceChoice: inputs.device,
    groupCount: created.groupCount,
    // schedule[s] is p after s optimizer steps, so step s + 1 draws its groups with it.
    schedule,
    activeGroups: [],
    lastReport: null,
    lastEvaluatedStep: 0,
    lastEvaluationExamples: null,
    stopRequested: false,
    ended: false,
    evaluating: false,
    stepDurations: [],
    trainingMs: 0,
    lastMark: 0,
    // The last state read from the trainer: `{bytes, step, trainingMs}`, or null.
    keptState: null,
    // The GPUDevice the trainer runs on, or null on the CPU.
    gpuDevice: null,
    // After continuing on the CPU: the step of the state it started from, and the step at which the GPU failed.
    continuedFrom: null,
    failedAfter: null,
  };
}

// ---------------------------------------------------------------------------------------
// Status, messages and the event log
// ---------------------------------------------------------------------------------------

let loadingTimer = null;

function setStatus(status, text) {
  page.status = status;
  const badge = $("status-badge");
  badge.dataset.status = status;
  badge.textContent = status;
  if (text !== undefined) {
    $("status-text").textContent = text;
  }
  if (loadingTimer !== null && status !== "loading") {
    clearInterval(loadingTimer);
    loadingTimer = null;
  }
  if (status !== "error") {
    page.error = null;
    $("error-box").hidden = true;
  }
  updateControls();
}

/**
 * Shows `message` as the page's error. With `restart`, the error box offers to start again on
 * the CPU; with `continueFrom` (a step), to continue the run on the CPU from that step.
 */
function showError(message, { restart = true, continueFrom = null, statusText = "Stopped by an error." } = {}) {
  setStatus("error", statusText);
  page.error = message;
  $("error-text").textContent = message;
  $("error-box").hidden = false;
  const restartButton = $("restart-button");
  restartButton.hidden = !restart;
  restartButton.textContent = $("device").value === "cpu" ? "Start again" : "Start again on the CPU";
  restartButton.classList.toggle("primary", continueFrom === null);
  const continueButton = $("continue-button");
  continueButton.hidden = continueFrom === null;
  continueButton.textContent = `Continue on the CPU from step ${continueFrom}`;
  logEvent(message, { error: true });
}

function errorMessage(error) {
  if (error instanceof WebAssembly.RuntimeError) {
    return `The WASM module crashed (${error.message}); the browser console has the panic message.`;
  }
  if (error instanceof Error) {
    return error.message || String(error);
  }
  return String(error);
}

function logEvent(message, { error = false } = {}) {
  const item = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  item.textContent = `${time}  ${message}`;
  if (error) {
    item.className = "error";
    console.error(message);
  } else {
    console.info(message);
  }
  $("event-log").prepend(item);
}

/** Shows or hides the buttons and locks the form for the current status. */
function updateControls() {
  const status = page.status;
  const busy = status === "loading" || status === "training" || status === "paused";
  $("setup-fields").disabled = busy;

  const start = $("start-button");
  start.hidden = busy;
  start.disabled = wasmPackage === null;
  start.textContent = run === null ? "Start training" : "Start a new run";

  $("stop-button").hidden = status !== "training";
  $("stop-button").disabled = run !== null && run.stopRequested;
  $("resume-button").hidden = status !== "paused";
  $("new-run-button").hidden = status !== "paused";

  const canUseModel = trainer !== null && trainerUsable && page.stepCount > 0;
  $("predict-panel").hidden = !canUseModel;
  $("export-panel").hidden = !canUseModel;
}

// ---------------------------------------------------------------------------------------
// Loading the package and the manifest
// ---------------------------------------------------------------------------------------

/**
 * Imports and initialises the WASM package. After a crash, `fresh` imports it under a new
 * URL, which gives a new module with a new WebAssembly instance.
 */
async function loadPackage(fresh = false) {
  if (fresh) {
    packageReloads += 1;
  }
  const url = packageReloads === 0 ? PACKAGE_URL : `${PACKAGE_URL}?instance=${packageReloads}`;
  let module;
  try {
    module = await import(url);
    await module.default();
  } catch (error) {
    throw new Error(
      `Loading the WASM package from pkg/coto.js failed: ${errorMessage(error)}. ` +
        "Build it with web/build.sh, which writes web/pkg/, and reload the page.",
    );
  }
  if (typeof module.Trainer?.create !== "function") {
    throw new Error("pkg/coto.js does not export Trainer.create; rebuild the WASM package.");
  }
  wasmPackage = module;
  packageCrashed = false;
}

async function loadManifest() {
  try {
    const response = await fetch(MANIFEST_URL);
    if (!response.ok) {
      throw new Error(`HTTP status ${response.status}`);
    }
    const parsed = await response.json();
    for (const key of ["config", "weights", "tokenizer"]) {
      if (typeof parsed?.model?.[key] !== "string") {
        throw new Error(`model.${key} is missing`);
      }
    }
    if (typeof parsed?.data?.url !== "string") {
      throw new Error("data.url is missing");
    }
    manifest = parsed;
    $("served-model-name").textContent = parsed.model.name || parsed.model.weights;
    $("served-data-name").textContent = parsed.data.name || parsed.data.url;
    if (!$("model-name").value && parsed.model.name) {
      $("model-name").value = parsed.model.name;
    }
    logEvent(`Served model: ${parsed.model.name || parsed.model.weights}; served data: ${parsed.data.name || parsed.data.url}.`);
  } catch (error) {
    manifest = null;
    const reason = `reading ${MANIFEST_URL} failed: ${errorMessage(error)}`;
    for (const id of ["served-model-name", "served-data-name"]) {
      $(id).textContent = `not available (${reason}); choose local files.`;
    }
    for (const name of ["model-source", "data-source"]) {
      document.querySelector(`input[name="${name}"][value="served"]`).disabled = true;
      document.querySelector(`input[name="${name}"][value="local"]`).checked = true;
    }
    updateSourceSections();
    logEvent(`No served model or data: ${reason}.`);
  }
}

// ---------------------------------------------------------------------------------------
// Reading the form
// ---------------------------------------------------------------------------------------

function radioValue(name) {
  return document.querySelector(`input[name="${name}"]:checked`).value;
}

/** Parses the number in input `id`. Error messages name the field by `label`. */
function readNumber(id, label, { integer = false, optional = false, min = null } = {}) {
  const raw = $(id).value.trim();
  if (raw === "") {
    if (optional) {
      return null;
    }
    throw new Error(`${label} is empty; enter a number.`);
  }
  const value = Number(raw);
  if (!Number.isFinite(value)) {
    throw new Error(`${label} must be a number, not "${raw}".`);
  }
  if (integer && !Number.isInteger(value)) {
    throw new Error(`${label} must be a whole number, not ${raw}.`);
  }
  if (min !== null && value < min) {
    throw new Error(`${label} must be at least ${min}, not ${raw}.`);
  }
  return value;
}

async function readFileBytes(inputId, label) {
  const file = $(inputId).files[0];
  if (!file) {
    throw new Error(`Choose the model's ${label} file.`);
  }
  return new Uint8Array(await file.arrayBuffer());
}

async function readModelInput() {
  const name = $("model-name").value.trim();
  if (radioValue("model-source") === "served") {
    if (manifest === null) {
      throw new Error("The server provides no model; choose the three local model files.");
    }
    const model = {
      config: manifest.model.config,
      weights: manifest.model.weights,
      tokenizer: manifest.model.tokenizer,
    };
    model.name = name || manifest.model.name || undefined;
    return model;
  }
  const model = {
    config: await readFileBytes("model-config", "config.json"),
    weights: await readFileBytes("model-weights", "model.safetensors"),
    tokenizer: await readFileBytes("model-tokenizer", "tokenizer.json"),
  };
  if (name) {
    model.name = name;
  }
  return model;
}

async function readDataInput() {
  if (radioValue("data-source") === "served") {
    if (manifest === null) {
      throw new Error("The server provides no dataset; choose a local data file.");
    }
    const data = { url: manifest.data.url };
    if (manifest.data.format) {
      data.format = manifest.data.format;
    }
    return data;
  }
  const file = $("data-file").files[0];
  if (!file) {
    throw new Error("Choose a training data file (CSV, TSV or JSONL).");
  }
  const data = { text: await file.text() };
  const validationFile = $("validation-file").files[0];
  if (validationFile) {
    data.validationText = await validationFile.text();
  }

  const format = $("data-format").value;
  if (format) {
    data.format = format;
  }
  const textColumn = $("text-column").value.trim();
  const labelColumn = $("label-column").value.trim();
  if (textColumn) {
    data.textColumn = textColumn;
  }
  if (labelColumn) {
    data.labelColumn = labelColumn;
  }
  return data;
}

function readSettings() {
  const method = radioValue("method");
  const targetModules = $("target-modules")
    .value.split(/[\s,]+/)
    .filter((name) => name !== "");
  if (targetModules.length === 0) {
    throw new Error("Target modules is empty; enter at least one module name, such as query, value.");
  }
  const settings = {
    method,
    lr: readNumber("lr", "Learning rate"),
    batch_size: readNumber("batch-size", "Batch size", { integer: true, min: 1 }),
    max_length: readNumber("max-length", "Max length", { integer: true, min: 2 }),
    epochs: readNumber("epochs", "Epochs", { integer: true, min: 1 }),
    max_steps: readNumber("max-steps", "Max steps", { integer: true, min: 1, optional: true }),
    eval_every: readNumber("eval-every", "Evaluate every", { integer: true, min: 0 }),
    seed: readNumber("seed", "Seed", { integer: true, min: 0 }),
    weight_decay: readNumber("weight-decay", "Weight decay"),
    warmup_ratio: readNumber("warmup-ratio", "Warm-up ratio"),
    validation_fraction: readNumber("validation-fraction", "Validation fraction"),
    lora: {
      r: readNumber("lora-r", "Rank r", { integer: true, min: 1 }),
      lora_alpha: readNumber("lora-alpha", "Alpha"),
      lora_dropout: readNumber("lora-dropout", "Dropout"),
      target_modules: targetModules,
    },
  };
  // The CoTo fields are disabled for plain LoRA, so they are only sent for CoTo.
  if (method === "coto") {
    settings.coto = {
      initial_p: readNumber("coto-initial-p", "Initial p"),
      final_p: readNumber("coto-final-p", "Final p"),
      stage1_ratio: readNumber("coto-stage1-ratio", "Stage-1 ratio"),
      schedule: $("coto-schedule").value,
    };
  }
  return settings;
}

function describeAdapter(settings) {
  const lora = settings.lora;
  let text = `LoRA r=${lora.r}, alpha=${lora.lora_alpha} on ${lora.target_modules.join(", ")}`;
  if (settings.method === "coto") {
    const coto = settings.coto;
    const percent = Math.round(coto.stage1_ratio * 100);
    text += `; CoTo ${coto.schedule}, p ${coto.initial_p} → ${coto.final_p} over ${percent}% of the steps`;
  } else {
    text += "; plain LoRA (every adapter on)";
  }
  return text;
}

/** Reads the whole form into the arguments of `Trainer.create`. */
async function readInputs() {
  const settings = readSettings();
  const model = await readModelInput();
  const data = await readDataInput();
  return { model, data, settings, device: $("device").value, summary: describeAdapter(settings) };
}

// ---------------------------------------------------------------------------------------
// Local data files: offering the column names
// ---------------------------------------------------------------------------------------

/** Splits one CSV line at commas outside double quotes. */
function splitCsvLine(line) {
  const fields = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const char = line[i];
    if (quoted) {
      if (char === '"' && line[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (char === '"') {
        quoted = false;
      } else {
        field += char;
      }
    } else if (char === '"') {
      quoted = true;
    } else if (char === ",") {
      fields.push(field);
      field = "";
    } else {
      field += char;
    }
  }
  fields.push(field);
  return fields.map((name) => name.trim());
}

/** Guesses the column names from the first line of a data file, for the column inputs. */
function detectColumns(firstLine, fileName) {
  const trimmed = firstLine.replace(/^\uFEFF/, "").trim();
  if (trimmed.startsWith("{")) {
    try {
      return { format: "JSON Lines", columns: Object.keys(JSON.parse(trimmed)) };
    } catch {
      return { format: "JSON Lines", columns: [] };
    }
  }
  if (trimmed.includes("\t") || /\.tsv$/i.test(fileName)) {
    return { format: "tab-separated", columns: trimmed.split("\t").map((name) => name.trim()) };
  }
  return { format: "comma-separated", columns: splitCsvLine(trimmed) };
}

async function onDataFileChosen() {
  const file = $("data-file").files[0];
  const hint = $("data-columns");
  const list = $("column-names");
  list.replaceChildren();
  if (!file) {
    hint.hidden = true;
    return;
  }
  const head = await file.slice(0, 64 * 1024).text();
  const firstLine = head.split(/\r?\n/, 1)[0] ?? "";
  const { format, columns } = detectColumns(firstLine, file.name);
  for (const name of columns) {
    const option = document.createElement("option");
    option.value = name;
    list.append(option);
  }

  let columnList = columns.slice(0, 12).join(", ");
  if (columns.length > 12) {
    columnList += ", …";
  }
  hint.textContent = `${file.name}: ${format}; first line: ${columnList || "(empty)"}.`;
  if (format === "tab-separated" && !columns.includes($("text-column").value.trim())) {
    hint.textContent += ` The first line does not name a "${$("text-column").value.trim()}" column, so auto-detect reads label<TAB>text lines.`;
  }
  hint.hidden = false;

  // Pick the usual names when the file has them and the fields still hold names it lacks.
  for (const [id, candidates] of [
    ["text-column", ["text", "sentence", "content", "message", "review"]],
    ["label-column", ["label", "labels", "class", "category", "target"]],
  ]) {
    const input = $(id);
    if (!columns.includes(input.value.trim())) {
      const match = candidates.find((name) => columns.includes(name));
      if (match) {
        input.value = match;
      }
    }
  }
}

function updateSourceSections() {
  $("local-model").hidden = radioValue("model-source") !== "local";
  $("local-data").hidden = radioValue("data-source") !== "local";
}

function updateMethodSection() {
  const coto = radioValue("method") === "coto";
  for (const element of $("coto-settings").querySelectorAll("input, select")) {
    element.disabled = !coto;
  }
  $("coto-settings").classList.toggle("muted", !coto);
}

// ---------------------------------------------------------------------------------------
// Running: start, the training loop, stop, resume, errors
// ---------------------------------------------------------------------------------------

async function disposeTrainer() {
  if (trainer === null) {
    return;
  }
  const old = trainer;
  trainer = null;
  trainerUsable = false;
  // A crashed instance must not be called again, so its trainer is dropped with the old module.
  if (!packageCrashed) {
    await exclusive(() => old.dispose()).catch((error) => {
      console.warn("Disposing the previous trainer failed:", error);
    });
  }
}

function resetResults() {
  run = null;
  page.device = null;
  page.method = null;
  page.totalSteps = 0;
  page.stepCount = 0;
  page.groupCount = 0;
  page.labels = [];
  page.datasetSizes = null;
  page.losses = [];
  page.evaluations = [];
  page.stepsPerSecond = null;
  page.keptStateStep = 0;
  page.deviceLost = null;
  page.deviceHistory = [];
  $("final-panel").hidden = true;
  $("predict-result").replaceChildren();
  clearDownloadLinks();
  $("device-notice").hidden = true;
  for (const id of ["fact-device", "fact-adapter", "fact-step", "fact-rate", "fact-eta", "fact-data", "fact-labels", "fact-lr"]) {
    $(id).textContent = "–";
  }
  scheduleRender();
}

/** Starts a new run with the form's settings. */
async function startRun() {
  if (wasmPackage === null && !packageCrashed) {
    showError("The WASM package has not loaded; see the message above and reload the page.", { restart: false });
    return;
  }
  let inputs;
  try {
    inputs = await readInputs();
  } catch (error) {
    showError(errorMessage(error), { restart: false, statusText: "The run did not start." });
    return;
  }

  setStatus("loading", "Loading the model and data, and starting the device…");
  const started = performance.now();
  loadingTimer = setInterval(() => {
    const seconds = Math.round((performance.now() - started) / 1000);
    $("status-text").textContent = `Loading the model and data, and starting the device… ${seconds} s`;
  }, 1000);

  // In the one-column layout the status sits below the long form, so it is brought into view.
  if (matchMedia("(max-width: 900px)").matches) {
    $("status-panel").scrollIntoView({ block: "start", behavior: "smooth" });
  }

  await disposeTrainer();
  resetResults();
  logEvent(`Starting a run: ${inputs.summary}; device ${inputs.device}.`);

  let created;
  try {
    if (packageCrashed) {
      logEvent("Loading a fresh instance of the WASM package after the crash.");
      await loadPackage(true);
    }
    created = await wasmPackage.Trainer.create(inputs.model, inputs.data, inputs.settings, inputs.device);
  } catch (error) {
    if (error instanceof WebAssembly.RuntimeError) {
      packageCrashed = true;
    }
    showError(`Starting the run failed: ${errorMessage(error)}`);
    return;
  }

  trainer = created;
  trainerUsable = true;
  try {
    run = createRunState(created, inputs);
    page.device = created.device;
    page.deviceHistory.push(created.device);
    // The package's device is the newest one this page saw (burn reuses it between runs).
    run.gpuDevice = created.device.startsWith("WebGPU") ? (page.gpuDevices.at(-1) ?? null) : null;
    page.method = inputs.settings.method;
    page.totalSteps = created.totalSteps;
    page.groupCount = created.groupCount;
    page.labels = Array.from(created.labels);
    page.datasetSizes = Array.from(created.datasetSizes);
  } catch (error) {
    showError(`Reading the new trainer's properties failed: ${errorMessage(error)}`);
    return;
  }

  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  logEvent(
    `Trainer ready in ${seconds} s on ${page.device}: ${page.totalSteps} steps, ` +
      `${page.datasetSizes[0]} training and ${page.datasetSizes[1]} validation examples, ` +
      `labels ${page.labels.join(", ")}, ${page.groupCount} adapter groups.`,
  );
  showRunFacts();
  scheduleRender();
  await trainLoop();
}

function showRunFacts() {
  $("fact-device").textContent = page.device;
  $("fact-adapter").textContent = `${run.summary}; ${page.groupCount} groups`;
  const [trainSize, validationSize] = page.datasetSizes;
  $("fact-data").textContent = `${trainSize} training, ${validationSize} validation`;
  $("fact-labels").textContent = page.labels.join(", ");

  const notice = $("device-notice");
  const usesCpu = page.device.startsWith("CPU");
  if (run.continuedFrom !== null) {
    notice.textContent =
      `The GPU failed after step ${run.failedAfter}, so the run continues on the CPU from step ` +
      `${run.continuedFrom}, the last state kept on the GPU.`;
    notice.hidden = false;
  } else if (usesCpu && run.deviceChoice === "auto" && "gpu" in navigator) {
    notice.textContent =
      "This browser has WebGPU, but no GPU adapter could be started, so training runs on the CPU. " +
      "The browser console shows the reason.";
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }
}

function evaluationDue(state) {
  if (page.stepCount <= state.lastEvaluatedStep) {
    return false;
  }
  if (state.ended) {
    return true;
  }
  return state.evalEvery > 0 && page.stepCount % state.evalEvery === 0;
}

/** Steps for the next `train` call: enough for about TARGET_CHUNK_SECONDS, up to the next evaluation. */
function nextChunkSize(state) {
  let steps = 1;
  if (state.stepDurations.length > 0) {
    const meanSeconds = state.stepDurations.reduce((a, b) => a + b, 0) / state.stepDurations.length / 1000;
    steps = Math.floor(TARGET_CHUNK_SECONDS / Math.max(meanSeconds, 1e-3));
  }
  steps = Math.max(1, Math.min(MAX_STEPS_PER_CHUNK, steps));
  steps = Math.min(steps, page.totalSteps - page.stepCount);
  if (state.evalEvery > 0) {
    steps = Math.min(steps, state.evalEvery - (page.stepCount % state.evalEvery));
  }
  return Math.max(1, steps);
}

/**
 * Trains until the run ends or Stop is pressed, evaluating every `evalEvery` steps and at
 * the end. Returns when the run is paused, done or failed.
 */
async function trainLoop() {
  const state = run;
  const current = trainer;
  setStatus("training", trainingText());
  try {
    for (;;) {
      if (state !== run) {
        return;
      }
      if (state.stopRequested) {
        await keepState(state, current);
        if (state !== run || current !== trainer) {
          return;
        }
        setStatus("paused", `Paused at step ${page.stepCount} of ${page.totalSteps}. Resume continues the same run.`);
        logEvent(`Paused at step ${page.stepCount}.`);
        scheduleRender();
        return;
      }
      if (page.stepCount >= page.totalSteps) {
        state.ended = true;
      }
      if (evaluationDue(state)) {
        await evaluateNow(state, current);
        continue;
      }
      if (state.ended) {
        // The trained model lives on the GPU; a kept final state brings it to the CPU if the GPU is lost.
        await keepState(state, current);
        if (state !== run || current !== trainer) {
          return;
        }
        finishRun(state);
        return;
      }
      const steps = nextChunkSize(state);
      const last = await exclusive(() => {
        state.lastMark = performance.now();
        return current.train(steps, (report) => {
          if (current === trainer) {
            recordStep(state, report);
          }
        });
      });
      if (state !== run || current !== trainer) {
        return;
      }
      if (last === null) {
        // The trainer had no steps left although the page expected more.
        state.ended = true;
      }
      if (state.trainingMs - (state.keptState?.trainingMs ?? 0) >= KEEP_STATE_SECONDS * 1000) {
        await keepState(state, current);
      }
    }
  } catch (error) {
    if (state !== run || current !== trainer) {
      return;
    }
    failRun(error);
  }
}

function trainingText() {
  if (run?.stopRequested) {
    return "Stopping after the current step…";
  }
  if (run?.evaluating) {
    return `Evaluating on the validation set at step ${page.stepCount}…`;
  }
  return `Training: step ${page.stepCount} of ${page.totalSteps}.`;
}

/** Records one step report; the package calls this after each step. */
function recordStep(state, report) {
  if (state !== run) {
    return;
  }
  const now = performance.now();
  const duration = now - state.lastMark;
  state.lastMark = now;
  state.trainingMs += duration;
  state.stepDurations.push(duration);
  if (state.stepDurations.length > RATE_WINDOW_STEPS) {
    state.stepDurations.shift();
  }
  const windowSeconds = state.stepDurations.reduce((a, b) => a + b, 0) / 1000;
  page.stepsPerSecond = windowSeconds > 0 ? state.stepDurations.length / windowSeconds : null;

  page.stepCount = report.step;
  page.losses.push(report.loss);
  state.activeGroups[report.step - 1] = Array.from(report.active_groups ?? [], Boolean);
  state.lastReport = report;
  $("status-text").textContent = trainingText();
  scheduleRender();
}

async function evaluateNow(state, current) {
  state.evaluating = true;
  $("status-text").textContent = trainingText();
  try {
    const started = performance.now();
    const evaluatedStep = page.stepCount;
    const report = await exclusive(() => current.evaluate());
    // After a lost GPU the run goes on with another trainer, and this result is stale.
    if (state !== run || current !== trainer) {
      return;
    }
    const metrics = report.metrics;
    page.evaluations.push({
      step: report.step,
      accuracy: metrics.accuracy,
      macro_f1: metrics.macro_f1,
      loss: metrics.loss,
    });
    state.lastEvaluatedStep = evaluatedStep;
    state.lastEvaluationExamples = metrics.examples;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    logEvent(
      `Step ${report.step}: validation accuracy ${formatPercent(metrics.accuracy)}, ` +
        `macro F1 ${metrics.macro_f1.toFixed(4)}, loss ${metrics.loss.toFixed(4)} ` +
        `(${metrics.examples} examples, ${seconds} s).`,
    );
  } finally {
    state.evaluating = false;
  }
  $("status-text").textContent = trainingText();
  scheduleRender();
}

function finishRun(state) {
  const last = page.evaluations[page.evaluations.length - 1];
  const summary = last
    ? `Done: ${page.stepCount} steps, validation accuracy ${formatPercent(last.accuracy)}.`
    : `Done: ${page.stepCount} steps.`;
  setStatus("done", summary);
  logEvent(`${summary} Training took ${formatDuration(state.trainingMs / 1000)} of compute time.`);
  showFinalMetrics(state);
  scheduleRender();
}

function failRun(error) {
  if (page.deviceLost !== null) {
    // The lost GPU explains this error; the page already offers to continue on the CPU.
    logEvent(`The step on the lost GPU failed: ${errorMessage(error)}`);
    return;
  }
  if (error instanceof WebAssembly.RuntimeError) {
    packageCrashed = true;
    trainerUsable = false;
  }
  let message = errorMessage(error);
  if (/device.*lost|lost.*device/i.test(message)) {
    message = `The GPU device was lost: ${message}`;
  }
  // Any failure on the GPU can be left behind: the kept state continues on the CPU.
  const saved = page.device?.startsWith("WebGPU") ? run?.keptState : null;
  showError(`Training failed at step ${page.stepCount}: ${message}`, { continueFrom: saved?.step ?? null });
  if (run !== null && page.evaluations.length > 0) {
    showFinalMetrics(run);
  }
  scheduleRender();
}

function requestStop() {
  if (run === null || page.status !== "training") {
    return;
  }
  run.stopRequested = true;
  $("status-text").textContent = trainingText();
  updateControls();
}

async function resumeRun() {
  if (run === null || page.status !== "paused") {
    return;
  }
  run.stopRequested = false;
  logEvent(`Resuming at step ${page.stepCount}.`);
  await trainLoop();
}

/** Leaves a paused run: the form unlocks, and the trained model stays usable until the next start. */
function leavePausedRun() {
  if (page.status !== "paused") {
    return;
  }
  setStatus("idle", "Change the settings and start a new run. The paused run's results stay until then.");
}

async function restartOnCpu() {
  $("device").value = "cpu";
  await startRun();
}

/** Reads the trainer's state (adapter, optimizer moments, CoTo draw) and keeps it for recovery. */
async function keepState(state, current) {
  if (!page.device.startsWith("WebGPU")) {
    // Only a GPU can be lost; a failing CPU run has nothing to recover to.
    return;
  }
  const bytes = await exclusive(() => current.saveState());
  if (state !== run || current !== trainer) {
    return;
  }
  state.keptState = { bytes, step: page.stepCount, trainingMs: state.trainingMs };
  page.keptStateStep = page.stepCount;
}

/** Watches every GPUDevice that the package creates, to tell the user when the GPU is lost. */
function watchGpuDevices() {
  if (typeof GPUAdapter === "undefined") {
    return;
  }
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function watchedRequestDevice(...args) {
    const device = await requestDevice.apply(this, args);
    page.gpuDevices.push(device);
    device.lost.then((info) => onGpuDeviceLost(device, info));
    return device;
  };
}

/**
 * Stops a run whose GPU was lost, keeps its last state, and offers to continue on the CPU from
 * it. The package instance is given up: a call on the lost device may never settle.
 */
function onGpuDeviceLost(device, info) {
  const reason = info?.reason ?? "unknown";
  const detail = info?.message ? `: ${info.message}` : "";
  const state = run;
  const current = state !== null && trainer !== null && state.gpuDevice === device;
  if (!current || page.deviceLost !== null) {
    logEvent(`A GPU device of this page was lost (${reason}${detail}).`);
    return;
  }
  const saved = state.keptState;
  page.deviceLost = { reason, message: info?.message ?? "", step: saved?.step ?? 0 };
  trainer = null;
  trainerUsable = false;
  packageCrashed = true;
  callQueue = Promise.resolve();
  state.stopRequested = false;
  const message =
    `The GPU device was lost after step ${page.stepCount} (${reason}${detail}). ` +
    "This happens when the GPU driver restarts, the GPU is needed elsewhere, or the browser reclaims it.";
  if (saved === null) {
    showError(`${message} No state was kept yet, so the run must start again.`, { statusText: "The GPU was lost." });
  } else {
    showError(`${message} The state after step ${saved.step} is kept.`, {
      continueFrom: saved.step,
      statusText: "The GPU was lost.",
    });
  }
  scheduleRender();
}

/** Continues a run that failed on the GPU (or lost it) on the CPU, from the state kept last. */
async function continueOnCpu() {
  const state = run;
  const saved = state?.keptState;
  if (!saved || page.status !== "error") {
    return;
  }

  setStatus("loading", `Continuing on the CPU from step ${saved.step}…`);
  // The GPU is left behind, so its loss no longer concerns this run.
  state.gpuDevice = null;

  let created;
  try {
    logEvent("Loading a fresh instance of the WASM package for the CPU.");
    await loadPackage(true);
    created = await wasmPackage.Trainer.create(state.inputs.model, state.inputs.data, state.inputs.settings, "cpu");
    await created.restoreState(saved.bytes);
  } catch (error) {
    if (error instanceof WebAssembly.RuntimeError) {
      packageCrashed = true;
    }
    showError(`Continuing on the CPU failed: ${errorMessage(error)}`, { continueFrom: saved.step });
    return;
  }
  if (state !== run) {
    return;
  }

  trainer = created;
  trainerUsable = true;
  page.deviceLost = null;
  state.failedAfter = page.stepCount;
  state.continuedFrom = saved.step;
  rewindTo(state, saved);
  page.device = created.device;
  page.deviceHistory.push(created.device);
  logEvent(`Continuing on ${page.device} from step ${saved.step} of ${page.totalSteps}.`);
  showRunFacts();
  scheduleRender();
  await trainLoop();
}

/** Drops what the page recorded after the kept state's step. */
function rewindTo(state, saved) {
  page.stepCount = saved.step;
  page.losses.length = saved.step;
  state.activeGroups.length = saved.step;
  page.evaluations = page.evaluations.filter((evaluation) => evaluation.step <= saved.step);
  state.lastEvaluatedStep = Math.min(state.lastEvaluatedStep, saved.step);
  state.trainingMs = saved.trainingMs;
  state.stepDurations = [];
  state.ended = false;
  page.stepsPerSecond = null;
}

// ---------------------------------------------------------------------------------------
// Results: final metrics, predictions, adapter files
// ---------------------------------------------------------------------------------------

function formatPercent(value) {
  return `${(value * 100).toFixed(2)}%`;
}

function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) {
    return "–";
  }
  if (seconds < 1) {
    return "under 1 s";
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ${String(Math.round(seconds % 60)).padStart(2, "0")} s`;
  }
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

function tableRow(cells, { header = false, numeric = [] } = {}) {
  const row = document.createElement("tr");
  cells.forEach((text, index) => {
    const cell = document.createElement(header ? "th" : "td");
    cell.textContent = text;
    if (numeric.includes(index)) {
      cell.className = "number";
    }
    row.append(cell);
  });
  return row;
}

function showFinalMetrics(state) {
  const last = page.evaluations[page.evaluations.length - 1];
  const table = $("final-metrics");
  table.replaceChildren();
  const rows = [["Steps", `${page.stepCount} of ${page.totalSteps}`]];
  if (last) {
    rows.push(
      ["Evaluated at step", String(last.step)],
      ["Validation accuracy", formatPercent(last.accuracy)],
      ["Validation macro F1", last.macro_f1.toFixed(4)],
      ["Validation loss", last.loss.toFixed(4)],
    );
    if (state.lastEvaluationExamples !== null) {
      rows.push(["Validation examples", String(state.lastEvaluationExamples)]);
    }
  }
  const smoothed = smoothLosses(page.losses);
  if (smoothed.length > 0) {
    rows.push(["Training loss (moving average)", smoothed[smoothed.length - 1].toFixed(4)]);
  }
  if (state.trainingMs > 0) {
    rows.push(
      ["Training time (steps only)", formatDuration(state.trainingMs / 1000)],
      ["Mean steps/s", (page.stepCount / (state.trainingMs / 1000)).toFixed(2)],
    );
  }
  const devices = page.deviceHistory.length > 1 ? page.deviceHistory.join(", then ") : page.device;
  rows.push(["Device", devices ?? "–"]);
  for (const row of rows) {
    table.append(tableRow(row, { numeric: [1] }));
  }

  const evaluations = $("evaluation-table");
  evaluations.replaceChildren(tableRow(["Step", "Accuracy", "Macro F1", "Loss"], { header: true }));
  for (const evaluation of page.evaluations) {
    evaluations.append(
      tableRow(
        [
          String(evaluation.step),
          formatPercent(evaluation.accuracy),
          evaluation.macro_f1.toFixed(4),
          evaluation.loss.toFixed(4),
        ],
        { numeric: [0, 1, 2, 3] },
      ),
    );
  }
  $("final-panel").hidden = false;
}

/** Flattens logits that come as one row per text into a plain array of numbers. */
function flattenLogits(logits) {
  const values = Array.from(logits ?? []);
  return values.flat(Infinity).map(Number);
}

function softmax(values) {
  const max = Math.max(...values);
  const exps = values.map((value) => Math.exp(value - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((value) => value / sum);
}

/** Classifies `text` with the current model, after any step in progress. */
async function predictText(text) {
  if (trainer === null || !trainerUsable) {
    throw new Error("There is no usable trained model; start a run first.");
  }
  const current = trainer;
  const result = await exclusive(() => current.predict(String(text)));
  return { label: result.label, logits: flattenLogits(result.logits) };
}

async function onPredictSubmit(event) {
  event.preventDefault();
  const text = $("predict-text").value.trim();
  const output = $("predict-result");
  if (!text) {
    output.textContent = "Type a sentence first.";
    return;
  }
  $("predict-button").disabled = true;
  output.textContent = "Classifying…";
  try {
    const result = await predictText(text);
    showPrediction(result);
  } catch (error) {
    output.textContent = `Classifying failed: ${errorMessage(error)}`;
  } finally {
    $("predict-button").disabled = false;
  }
}

function showPrediction(result) {
  const output = $("predict-result");
  output.replaceChildren();
  const label = document.createElement("p");
  label.textContent = "Predicted label: ";
  const name = document.createElement("span");
  name.className = "predicted-label";
  name.textContent = result.label;
  label.append(name);
  output.append(label);

  const labels = page.labels.length === result.logits.length ? page.labels : result.logits.map((_, i) => `class ${i}`);
  const probabilities = softmax(result.logits);
  const table = document.createElement("table");
  table.className = "metrics";
  table.append(tableRow(["Label", "Logit", "Probability", ""], { header: true }));
  labels.forEach((labelName, index) => {
    const row = tableRow(
      [labelName, result.logits[index].toFixed(4), formatPercent(probabilities[index]), ""],
      { numeric: [1, 2] },
    );
    const barCell = row.lastChild;
    barCell.className = "bar-cell";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(probabilities[index] * 100).toFixed(1)}%`;
    barCell.append(bar);
    table.append(row);
  });
  output.append(table);
}

/** Exports the adapter as the package's object that maps each file name to bytes or a string. */
async function exportAdapterFiles() {
  if (trainer === null || !trainerUsable) {
    throw new Error("There is no usable trained model; start a run first.");
  }
  const current = trainer;
  return exclusive(() => current.exportAdapter());
}

function fileBytes(content) {
  if (typeof content === "string") {
    return new TextEncoder().encode(content);
  }
  if (content instanceof Uint8Array) {
    return content;
  }
  if (content instanceof ArrayBuffer) {
    return new Uint8Array(content);
  }
  return Uint8Array.from(content);
}

function bytesToBase64(bytes) {
  // String.fromCharCode takes its arguments on the stack, so the bytes go in slices.
  const sliceLength = 0x8000;
  let binary = "";
  for (let offset = 0; offset < bytes.length; offset += sliceLength) {
    binary += String.fromCharCode.apply(null, bytes.subarray(offset, offset + sliceLength));
  }
  return btoa(binary);
}

async function exportAdapterBase64() {
  const files = await exportAdapterFiles();
  const encoded = {};
  for (const [name, content] of Object.entries(files)) {
    encoded[name] = bytesToBase64(fileBytes(content));
  }
  return encoded;
}

let downloadUrls = [];

function clearDownloadLinks() {
  for (const url of downloadUrls) {
    URL.revokeObjectURL(url);
  }
  downloadUrls = [];
  $("download-links").replaceChildren();
}

function formatBytes(count) {
  if (count < 1024) {
    return `${count} B`;
  }
  if (count < 1024 * 1024) {
    return `${(count / 1024).toFixed(1)} KiB`;
  }
  return `${(count / 1024 / 1024).toFixed(1)} MiB`;
}

async function onDownloadClick() {
  const button = $("download-button");
  button.disabled = true;
  button.textContent = "Exporting…";
  try {
    const files = await exportAdapterFiles();
    clearDownloadLinks();
    const links = [];
    for (const [name, content] of Object.entries(files)) {
      const bytes = fileBytes(content);
      const type = name.endsWith(".json") ? "application/json" : "application/octet-stream";
      const url = URL.createObjectURL(new Blob([bytes], { type }));
      downloadUrls.push(url);
      const link = document.createElement("a");
      link.href = url;
      link.download = name;
      link.textContent = name;
      const item = document.createElement("li");
      item.append(link, ` (${formatBytes(bytes.length)})`);
      $("download-links").append(item);
      links.push(link);
    }
    // Browsers may ask before allowing several downloads at once; the links stay on the
    // page for downloading a file by hand.
    for (const link of links) {
      link.click();
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
    logEvent(`Exported the adapter at step ${page.stepCount}: ${links.map((link) => link.download).join(", ")}.`);
  } catch (error) {
    logEvent(`Exporting the adapter failed: ${errorMessage(error)}`, { error: true });
    $("download-links").replaceChildren(Object.assign(document.createElement("li"), {
      textContent: `Exporting the adapter failed: ${errorMessage(error)}`,
    }));
  } finally {
    button.disabled = false;
    button.textContent = "Download adapter (3 files)";
  }
}

// ---------------------------------------------------------------------------------------
// Charts
// ---------------------------------------------------------------------------------------

const CHART_MARGIN = { left: 46, right: 14, top: 10, bottom: 26 };
const STRIP_MARGIN = { left: 40, right: 14, top: 6, bottom: 26 };

let chartColors = null;

function readChartColors() {
  const style = getComputedStyle(document.documentElement);
  const color = (name) => style.getPropertyValue(`--chart-${name}`).trim();
  chartColors = {
    grid: color("grid"),
    axis: color("axis"),
    text: color("text"),
    lossRaw: color("loss-raw"),
    lossSmooth: color("loss-smooth"),
    lossEval: color("loss-eval"),
    accuracy: color("accuracy"),
    f1: color("f1"),
    schedule: color("schedule"),
    activeShare: color("active-share"),
    marker: color("marker"),
    groupOn: color("group-on"),
    groupOff: color("group-off"),
  };
}

/** Sizes the canvas backing store to its CSS size at the device pixel ratio. */
function prepareCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (width === 0 || height === 0) {
    return null;
  }
  const backingWidth = Math.round(width * ratio);
  const backingHeight = Math.round(height * ratio);
  if (canvas.width !== backingWidth || canvas.height !== backingHeight) {
    canvas.width = backingWidth;
    canvas.height = backingHeight;
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  context.font = "11px system-ui, sans-serif";
  return { context, width, height };
}

/** Chooses a tick spacing of 1, 2 or 5 times a power of ten that gives about `count` ticks. */
function tickStep(span, count, { integer = false } = {}) {
  const raw = span / count;
  if (!(raw > 0)) {
    return 1;
  }
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const residual = raw / magnitude;
  let multiple = 10;
  if (residual <= 1) {
    multiple = 1;
  } else if (residual <= 2) {
    multiple = 2;
  } else if (residual <= 5) {
    multiple = 5;
  }
  const step = multiple * magnitude;
  return integer ? Math.max(1, Math.round(step)) : step;
}

function ticks(min, max, step) {
  const values = [];
  const first = Math.ceil(min / step - 1e-9) * step;
  for (let value = first; value <= max + step * 1e-9; value += step) {
    values.push(Math.abs(value) < step * 1e-9 ? 0 : value);
  }
  return values;
}

function formatTick(value, step) {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return value.toFixed(Math.min(decimals, 6));
}

function drawEmptyText(context, width, height, text) {
  context.fillStyle = chartColors.text;
  context.textAlign = "center";
  context.textBaseline = "middle";
  context.fillText(text, width / 2, height / 2);
}

/**
 * Draws the grid, tick labels and axes of a plot of x in [0, xMax] and y in [yMin, yMax],
 * and returns the functions that map data to canvas coordinates.
 */
function drawAxes(context, width, height, margin, xMax, yMin, yMax, { yTicks = true } = {}) {
  const left = margin.left;
  const right = width - margin.right;
  const top = margin.top;
  const bottom = height - margin.bottom;
  const x = (value) => left + (value / xMax) * (right - left);
  const y = (value) => bottom - ((value - yMin) / (yMax - yMin)) * (bottom - top);

  context.lineWidth = 1;
  context.fillStyle = chartColors.text;
  if (yTicks) {
    const step = tickStep(yMax - yMin, Math.max(2, Math.floor((bottom - top) / 40)));
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (const value of ticks(yMin, yMax, step)) {
      const position = Math.round(y(value)) + 0.5;
      context.strokeStyle = chartColors.grid;
      context.beginPath();
      context.moveTo(left, position);
      context.lineTo(right, position);
      context.stroke();
      context.fillText(formatTick(value, step), left - 6, position);
    }
  }

  const xStep = tickStep(xMax, Math.max(2, Math.floor((right - left) / 70)), { integer: true });
  context.textAlign = "center";
  context.textBaseline = "top";
  for (const value of ticks(0, xMax, xStep)) {
    const position = Math.round(x(value)) + 0.5;
    context.strokeStyle = chartColors.axis;
    context.beginPath();
    context.moveTo(position, bottom);
    context.lineTo(position, bottom + 4);
    context.stroke();
    context.fillText(String(value), position, bottom + 6);
  }

  context.strokeStyle = chartColors.axis;
  context.beginPath();
  context.moveTo(left + 0.5, top);
  context.lineTo(left + 0.5, bottom + 0.5);
  context.lineTo(right, bottom + 0.5);
  context.stroke();
  return { x, y, left, right, top, bottom };
}

function drawLine(context, map, points, color, lineWidth) {
  if (points.length === 0) {
    return;
  }
  context.strokeStyle = color;
  context.lineWidth = lineWidth;
  context.lineJoin = "round";
  context.beginPath();
  points.forEach(([xValue, yValue], index) => {
    if (index === 0) {
      context.moveTo(map.x(xValue), map.y(yValue));
    } else {
      context.lineTo(map.x(xValue), map.y(yValue));
    }
  });
  context.stroke();
}

function drawDots(context, map, points, color, radius) {
  context.fillStyle = color;
  for (const [xValue, yValue] of points) {
    context.beginPath();
    context.arc(map.x(xValue), map.y(yValue), radius, 0, Math.PI * 2);
    context.fill();
  }
}

function drawStepMarker(context, map, step) {
  const position = Math.round(map.x(step)) + 0.5;
  context.strokeStyle = chartColors.marker;
  context.lineWidth = 1;
  context.setLineDash([4, 3]);
  context.beginPath();
  context.moveTo(position, map.top);
  context.lineTo(position, map.bottom);
  context.stroke();
  context.setLineDash([]);
}

/** Exponential moving average with bias correction, so that the first steps are not pulled to 0. */
function smoothLosses(losses) {
  const weight = Math.min(0.95, Math.max(0.5, 1 - 10 / Math.max(1, page.totalSteps)));
  const smoothed = [];
  let average = 0;
  losses.forEach((loss, index) => {
    average = weight * average + (1 - weight) * loss;
    smoothed.push(average / (1 - weight ** (index + 1)));
  });
  return smoothed;
}

function drawLossChart() {
  const prepared = prepareCanvas($("loss-chart"));
  if (prepared === null) {
    return;
  }
  const { context, width, height } = prepared;
  if (page.losses.length === 0) {
    drawAxes(context, width, height, CHART_MARGIN, Math.max(1, page.totalSteps), 0, 1);
    drawEmptyText(context, width, height, "The loss appears after the first step.");
    return;
  }
  const raw = page.losses.map((loss, index) => [index + 1, loss]);
  const smoothed = smoothLosses(page.losses).map((loss, index) => [index + 1, loss]);
  const evaluations = page.evaluations.map((evaluation) => [evaluation.step, evaluation.loss]);
  const values = [...page.losses, ...evaluations.map(([, loss]) => loss)].filter(Number.isFinite);
  const yMax = Math.max(1e-6, ...values) * 1.05;
  const map = drawAxes(context, width, height, CHART_MARGIN, Math.max(1, page.totalSteps), 0, yMax);
  drawLine(context, map, raw, chartColors.lossRaw, 1);
  drawLine(context, map, smoothed, chartColors.lossSmooth, 2);
  drawDots(context, map, evaluations, chartColors.lossEval, 3.5);
}

function drawAccuracyChart() {
  const prepared = prepareCanvas($("accuracy-chart"));
  if (prepared === null) {
    return;
  }
  const { context, width, height } = prepared;
  const xMax = Math.max(1, page.totalSteps);
  if (page.evaluations.length === 0) {
    drawAxes(context, width, height, CHART_MARGIN, xMax, 0, 1);
    const every = run?.evalEvery;
    const text = every > 0 ? `Evaluated every ${every} steps and at the end.` : "Evaluated at the end of the run.";
    drawEmptyText(context, width, height, text);
    return;
  }
  const accuracy = page.evaluations.map((evaluation) => [evaluation.step, evaluation.accuracy]);
  const f1 = page.evaluations.map((evaluation) => [evaluation.step, evaluation.macro_f1]);
  const lowest = Math.min(...accuracy.map(([, value]) => value), ...f1.map(([, value]) => value));
  const yMin = Math.max(0, Math.min(0.9, Math.floor((lowest - 0.02) * 10) / 10));
  const map = drawAxes(context, width, height, CHART_MARGIN, xMax, yMin, 1);
  drawLine(context, map, f1, chartColors.f1, 1.5);
  drawDots(context, map, f1, chartColors.f1, 3);
  drawLine(context, map, accuracy, chartColors.accuracy, 2);
  drawDots(context, map, accuracy, chartColors.accuracy, 3.5);
}

function drawScheduleChart() {
  const prepared = prepareCanvas($("schedule-chart"));
  if (prepared === null) {
    return;
  }
  const { context, width, height } = prepared;
  if (run === null) {
    drawAxes(context, width, height, CHART_MARGIN, 1, 0, 1);
    drawEmptyText(context, width, height, "The schedule appears when the run starts.");
    return;
  }
  const total = Math.max(1, page.totalSteps);
  const map = drawAxes(context, width, height, CHART_MARGIN, total, 0, 1.0001);

  // Step s (from 1) draws its groups with p after s - 1 steps, so the curve at x = s is
  // schedule[s - 1]. The point at x = 0 repeats p(0) to start the line at the axis.
  const curve = [[0, run.schedule[0]]];
  for (let step = 1; step <= page.totalSteps; step += 1) {
    curve.push([step, run.schedule[step - 1]]);
  }
  if (run.groupCount > 0) {
    const shares = [];
    run.activeGroups.forEach((groups, index) => {
      if (groups) {
        shares.push([index + 1, groups.filter(Boolean).length / run.groupCount]);
      }
    });
    const radius = page.totalSteps > 400 ? 1.5 : 2.5;
    drawDots(context, map, shares, chartColors.activeShare, radius);
  }
  drawLine(context, map, curve, chartColors.schedule, 2);

  const step = page.stepCount;
  drawStepMarker(context, map, step);
  const currentP = run.schedule[Math.max(0, step - 1)];
  drawDots(context, map, [[step, currentP]], chartColors.marker, 4.5);
  // The label sits above the point, or below it when the point is near the top.
  context.fillStyle = chartColors.text;
  context.textAlign = map.x(step) > (map.left + map.right) / 2 ? "right" : "left";
  const offset = context.textAlign === "right" ? -8 : 8;
  const label = run.method === "coto" ? `p = ${currentP.toFixed(3)}` : "plain LoRA: p = 1";
  const pointY = map.y(currentP);
  const below = pointY - 20 < map.top;
  context.textBaseline = below ? "top" : "bottom";
  context.fillText(label, map.x(step) + offset, below ? pointY + 8 : pointY - 8);
}

/** Sets the strip's height from the number of groups, so that each row stays readable. */
function sizeStripCanvas() {
  const groups = run?.groupCount ?? 0;
  const rows = Math.max(1, groups);
  const height = Math.min(360, Math.max(90, rows * 16 + STRIP_MARGIN.top + STRIP_MARGIN.bottom));
  $("strip-chart").style.height = `${height}px`;
  const total = page.totalSteps;
  const width = $("strip-chart").clientWidth - STRIP_MARGIN.left - STRIP_MARGIN.right;
  $("strip-note").textContent =
    total > width
      ? "One row per group (transformer layer). The run has more steps than the strip has pixels, so each column covers several steps and its shade is the share of them with the group on."
      : "One row per group (transformer layer), one column per step.";
}

function drawStripChart() {
  const prepared = prepareCanvas($("strip-chart"));
  if (prepared === null) {
    return;
  }
  const { context, width, height } = prepared;
  const groups = run?.groupCount ?? 0;
  const total = page.totalSteps;
  if (run === null || groups === 0 || total === 0) {
    drawEmptyText(context, width, height, "The adapter groups appear when the run starts.");
    return;
  }
  const left = STRIP_MARGIN.left;
  const right = width - STRIP_MARGIN.right;
  const top = STRIP_MARGIN.top;
  const bottom = height - STRIP_MARGIN.bottom;
  const plotWidth = right - left;
  const rowHeight = (bottom - top) / groups;
  const rowGap = rowHeight >= 8 ? 1 : 0;

  // Row labels: L0 is the layer nearest the input. Thin rows get a label every few rows.
  context.fillStyle = chartColors.text;
  context.textAlign = "right";
  context.textBaseline = "middle";
  const labelEvery = Math.ceil(12 / rowHeight);
  for (let group = 0; group < groups; group += labelEvery) {
    context.fillText(`L${group}`, left - 6, top + (group + 0.5) * rowHeight);
  }

  // Columns: one per step, or one per pixel when the run has more steps than pixels.
  const columns = Math.max(1, Math.min(total, Math.floor(plotWidth)));
  const columnWidth = plotWidth / columns;
  const columnGap = columnWidth >= 5 ? 1 : 0;
  const stepsTaken = run.activeGroups.length;
  for (let column = 0; column < columns; column += 1) {
    const first = Math.floor((column * total) / columns);
    const end = Math.min(Math.floor(((column + 1) * total) / columns), stepsTaken);
    if (end <= first) {
      continue;
    }
    const x = left + column * columnWidth;
    for (let group = 0; group < groups; group += 1) {
      let on = 0;
      let counted = 0;
      for (let step = first; step < end; step += 1) {
        const active = run.activeGroups[step];
        if (active) {
          counted += 1;
          if (active[group]) {
            on += 1;
          }
        }
      }
      if (counted === 0) {
        continue;
      }
      const y = top + group * rowHeight;
      context.fillStyle = chartColors.groupOff;
      context.fillRect(x, y, columnWidth - columnGap, rowHeight - rowGap);
      if (on > 0) {
        context.globalAlpha = on / counted;
        context.fillStyle = chartColors.groupOn;
        context.fillRect(x, y, columnWidth - columnGap, rowHeight - rowGap);
        context.globalAlpha = 1;
      }
    }
  }

  // The step axis, with column boundaries at whole steps.
  const xStep = tickStep(total, Math.max(2, Math.floor(plotWidth / 70)), { integer: true });
  context.fillStyle = chartColors.text;
  context.strokeStyle = chartColors.axis;
  context.lineWidth = 1;
  context.textAlign = "center";
  context.textBaseline = "top";
  for (const value of ticks(0, total, xStep)) {
    const position = Math.round(left + (value / total) * plotWidth) + 0.5;
    context.beginPath();
    context.moveTo(position, bottom);
    context.lineTo(position, bottom + 4);
    context.stroke();
    context.fillText(String(value), position, bottom + 6);
  }

  if (page.stepCount > 0) {
    drawStepMarker(context, { x: (step) => left + (step / total) * plotWidth, top, bottom }, page.stepCount);
  }
}

function updateFacts() {
  if (run === null) {
    return;
  }
  $("fact-step").textContent = `${page.stepCount} of ${page.totalSteps}`;
  const rate = page.stepsPerSecond;
  $("fact-rate").textContent = rate ? `${rate.toFixed(2)} (last ${run.stepDurations.length} steps)` : "–";
  const remaining = page.totalSteps - page.stepCount;
  let timeLeft = "–";
  if (remaining === 0) {
    timeLeft = "0 s";
  } else if (rate) {
    timeLeft = `${formatDuration(remaining / rate)} (steps only)`;
  }
  $("fact-eta").textContent = timeLeft;
  const lr = run.lastReport?.lr;
  $("fact-lr").textContent = lr === undefined ? "–" : lr.toExponential(2);
  const fraction = page.totalSteps > 0 ? page.stepCount / page.totalSteps : 0;
  $("progress-bar").style.width = `${(fraction * 100).toFixed(1)}%`;
}

let renderPending = false;

/** Redraws the charts and facts at the next animation frame, at most once per frame. */
function scheduleRender() {
  if (renderPending) {
    return;
  }
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    render();
  });
}

function render() {
  if (chartColors === null) {
    readChartColors();
  }
  sizeStripCanvas();
  for (const draw of [updateFacts, drawLossChart, drawAccuracyChart, drawScheduleChart, drawStripChart]) {
    try {
      draw();
    } catch (error) {
      // A drawing bug must not stop the run, so it is only logged.
      console.error(`Drawing failed in ${draw.name}:`, error);
    }
  }
}

// ---------------------------------------------------------------------------------------
// URL parameters and start-up
// ---------------------------------------------------------------------------------------

/**
 * Fills the form from the query string (`steps`, `epochs`, `batch`, `maxLength`, `evalEvery`,
 * `method`, `device`, `lr`) and returns whether `autostart=1` was given. Numbers are
 * checked when the run starts, like typed values.
 */
function applyUrlParameters() {
  const parameters = new URLSearchParams(location.search);
  const fields = {
    steps: "max-steps",
    epochs: "epochs",
    batch: "batch-size",
    maxLength: "max-length",
    evalEvery: "eval-every",
    lr: "lr",
  };
  for (const [parameter, id] of Object.entries(fields)) {
    if (parameters.has(parameter)) {
      $(id).value = parameters.get(parameter);
    }
  }
  if (parameters.has("method")) {
    const method = parameters.get("method");
    const radio = document.querySelector(`input[name="method"][value="${CSS.escape(method)}"]`);
    if (radio === null) {
      throw new Error(`The URL parameter method=${method} is invalid; use coto or lora.`);
    }
    radio.checked = true;
  }
  if (parameters.has("device")) {
    const device = parameters.get("device");
    if (!["auto", "webgpu", "cpu"].includes(device)) {
      throw new Error(`The URL parameter device=${device} is invalid; use auto, webgpu or cpu.`);
    }
    $("device").value = device;
  }
  return parameters.get("autostart") === "1";
}

function connectControls() {
  $("setup").addEventListener("submit", (event) => {
    event.preventDefault();
    startRun();
  });
  $("stop-button").addEventListener("click", requestStop);
  $("resume-button").addEventListener("click", resumeRun);
  $("new-run-button").addEventListener("click", leavePausedRun);
  $("restart-button").addEventListener("click", restartOnCpu);
  $("continue-button").addEventListener("click", continueOnCpu);
  $("predict-form").addEventListener("submit", onPredictSubmit);
  $("download-button").addEventListener("click", onDownloadClick);
  $("data-file").addEventListener("change", () => {
    onDataFileChosen().catch((error) => logEvent(`Reading the data file's first line failed: ${errorMessage(error)}`, { error: true }));
  });
  for (const input of document.querySelectorAll('input[name="model-source"], input[name="data-source"]')) {
    input.addEventListener("change", updateSourceSections);
  }
  for (const input of document.querySelectorAll('input[name="method"]')) {
    input.addEventListener("change", updateMethodSection);
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && page.status === "training") {
      logEvent("The tab is hidden; browsers slow down timers in hidden tabs, so training may slow down until it is visible again.");
    }
  });

  const resizeObserver = new ResizeObserver(() => scheduleRender());
  for (const id of ["loss-chart", "accuracy-chart", "schedule-chart", "strip-chart"]) {
    resizeObserver.observe($(id));
  }
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    readChartColors();
    scheduleRender();
  });
}

async function main() {
  connectControls();
  watchGpuDevices();
  if (!("gpu" in navigator)) {
    $("webgpu-notice").textContent = WEBGPU_MISSING_MESSAGE;
    $("webgpu-notice").hidden = false;
    logEvent(WEBGPU_MISSING_MESSAGE);
  }

  let autostart = false;
  let parameterError = null;
  try {
    autostart = applyUrlParameters();
  } catch (error) {
    parameterError = errorMessage(error);
  }
  updateSourceSections();
  updateMethodSection();
  scheduleRender();

  setStatus("loading", "Loading the WASM package…");
  const [packageResult] = await Promise.allSettled([loadPackage(), loadManifest()]);
  if (packageResult.status === "rejected") {
    showError(errorMessage(packageResult.reason), { restart: false, statusText: "The WASM package did not load." });
    return;
  }
  logEvent("WASM package loaded.");
  if (parameterError !== null) {
    showError(parameterError, { restart: false, statusText: "The URL parameters are invalid." });
    return;
  }
  setStatus("idle", "Ready. Choose the model, the data and the settings, then start training.");
  if (autostart) {
    await startRun();
  }
}

main().catch((error) => {
  showError(`The page failed to start: ${errorMessage(error)}`, { restart: false });
});
