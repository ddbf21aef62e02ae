#!/usr/bin/env node
// Drives the coto page in headless Chromium (through chromedriver's W3C WebDriver HTTP API) or Firefox:
// opens the page, waits until `window.cotoPage.status` is "done" or "error", then saves a
// screenshot, predictions for the given texts, the adapter files and result.json.
//
// Usage:
//   node web/e2e/drive.mjs --url 'http://127.0.0.1:PORT/?steps=6&batch=4&autostart=1' --out DIR
//       [--chromium /usr/bin/chromium] [--chromedriver /usr/bin/chromedriver]
//       [--timeout 600] [--text "some text"]... [--lose-gpu-at STEP]
//       [--browser chromium|firefox] [--firefox /usr/bin/firefox-esr]
//
// With --lose-gpu-at, the driver destroys the page's GPU devices once the run has passed STEP
// and kept a state, as a driver reset would, then presses "Continue on the CPU" and waits for
// the run to finish there.
//
// Chromium is driven through chromedriver; Firefox through puppeteer-core (web/e2e/firefox.mjs,
// installed with `npm ci --prefix web/e2e`).
//
// Exit status: 0 when the run finished ("done") and every prediction and the export
// succeeded, 1 otherwise, 2 for invalid arguments. Only 127.0.0.1 is contacted.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { FirefoxDriver } from "./firefox.mjs";

const USAGE = `Usage: node web/e2e/drive.mjs --url URL --out DIR [--browser chromium|firefox] [--chromium PATH] [--chromedriver PATH] [--firefox PATH] [--timeout SECONDS] [--text TEXT]... [--lose-gpu-at STEP]

  --url           page to open; its host must be 127.0.0.1 (e.g. http://127.0.0.1:8000/?steps=6&batch=4&autostart=1)
  --out           directory for screenshot.png, result.json, console.log, chromedriver.log and adapter/
  --chromium      Chromium binary (default /usr/bin/chromium)
  --chromedriver  chromedriver binary (default /usr/bin/chromedriver)
  --browser       chromium (default) or firefox
  --firefox       Firefox binary (default /usr/bin/firefox-esr)
  --timeout       seconds to wait for the run to finish (default 600)
  --text          a sentence to classify after training; repeat for several
  --lose-gpu-at   destroy the GPU device after this step, then continue the run on the CPU`;

const POLL_INTERVAL_MS = 1000;
const PROGRESS_INTERVAL_MS = 5000;
const CHROMEDRIVER_START_TIMEOUT_MS = 20_000;
const SCRIPT_TIMEOUT_MS = 300_000;
const PAGE_LOAD_TIMEOUT_MS = 120_000;
const MAX_SCREENSHOT_HEIGHT = 6000;

class UsageError extends Error {}

function parseArguments(argv) {
  const options = {
    url: null,
    out: null,
    chromium: "/usr/bin/chromium",
    chromedriver: "/usr/bin/chromedriver",
    browser: "chromium",
    firefox: "/usr/bin/firefox-esr",
    timeout: 600,
    texts: [],
    loseGpuAt: null,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === "--help" || flag === "-h") {
      console.log(USAGE);
      process.exit(0);
    }
    const value = argv[i + 1];
    if (value === undefined) {
      throw new UsageError(`${flag} needs a value.`);
    }
    i += 1;
    switch (flag) {
      case "--url":
        options.url = value;
        break;
      case "--out":
        options.out = value;
        break;
      case "--chromium":
        options.chromium = value;
        break;
      case "--chromedriver":
        options.chromedriver = value;
        break;
      case "--browser":
        if (!["chromium", "firefox"].includes(value)) {
          throw new UsageError(`--browser must be chromium or firefox, not ${value}.`);
        }
        options.browser = value;
        break;
      case "--firefox":
        options.firefox = value;
        break;
      case "--timeout":
        options.timeout = Number(value);
        if (!(options.timeout > 0)) {
          throw new UsageError(`--timeout must be a number of seconds above 0, not ${value}.`);
        }
        break;
      case "--text":
        options.texts.push(value);
        break;
      case "--lose-gpu-at":
        options.loseGpuAt = Number(value);
        if (!Number.isInteger(options.loseGpuAt) || options.loseGpuAt < 1) {
          throw new UsageError(`--lose-gpu-at must be a step number of 1 or more, not ${value}.`);
        }
        break;
      default:
        throw new UsageError(`Unknown option ${flag}.`);
    }
  }
  if (options.url === null || options.out === null) {
    throw new UsageError("--url and --out are required.");
  }
  let url;
  try {
    url = new URL(options.url);
  } catch {
    throw new UsageError(`--url is not a valid URL: ${options.url}`);
  }
  if (url.hostname !== "127.0.0.1" || !["http:", "https:"].includes(url.protocol)) {
    throw new UsageError(`--url must be an http(s) URL on 127.0.0.1, not ${options.url}.`);
  }
  const binaries =
    options.browser === "firefox"
      ? [["--firefox", options.firefox]]
      : [["--chromium", options.chromium], ["--chromedriver", options.chromedriver]];
  for (const [flag, file] of binaries) {
    if (!fs.existsSync(file)) {
      throw new UsageError(`${flag} ${file} does not exist; install the browser (and chromedriver for Chromium) or pass its path.`);
    }
  }
  return options;
}

/** Finds a free TCP port on 127.0.0.1 by letting the kernel choose one. */
function findFreePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A chromedriver process and the WebDriver session opened through it. */
class Driver {
  constructor(options) {
    this.options = options;
    this.process = null;
    this.exited = false;
    this.base = null;
    this.sessionId = null;
    this.profileDir = null;
  }

  async start(logPath) {
    const port = await findFreePort();
    this.base = `http://127.0.0.1:${port}`;
    const log = fs.openSync(logPath, "w");
    // Without --allowed-ips, chromedriver listens on loopback only.
    this.process = spawn(this.options.chromedriver, [`--port=${port}`], {
      stdio: ["ignore", log, log],
    });
    fs.closeSync(log);
    this.process.on("exit", () => {
      this.exited = true;
    });
    const deadline = Date.now() + CHROMEDRIVER_START_TIMEOUT_MS;
    for (;;) {
      if (this.exited) {
        throw new Error(`chromedriver exited during start-up; see ${logPath}.`);
      }
      try {
        const response = await fetch(`${this.base}/status`, { signal: AbortSignal.timeout(2000) });
        const payload = await response.json();
        if (payload?.value?.ready) {
          return;
        }
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        throw new Error(`chromedriver did not become ready within ${CHROMEDRIVER_START_TIMEOUT_MS / 1000} s; see ${logPath}.`);
      }
      await sleep(200);
    }
  }

  /** Sends one WebDriver command and returns its `value`. Throws on a WebDriver error. */
  async command(method, pathname, body, timeoutMs = 60_000) {
    const init = { method, signal: AbortSignal.timeout(timeoutMs) };
    if (body !== undefined) {
      init.headers = { "content-type": "application/json; charset=utf-8" };
      init.body = JSON.stringify(body);
    }
    const response = await fetch(`${this.base}${pathname}`, init);
    const text = await response.text();
    let payload = null;
    try {
      payload = JSON.parse(text);
    } catch {
      // Reported below with the raw text.
    }
    // Only the HTTP status marks an error, because a script's result may have an `error` field too.
    if (!response.ok) {
      const error = payload?.value?.error;
      const detail = error ? `${error}: ${payload.value.message}` : `HTTP status ${response.status}: ${text.slice(0, 500)}`;
      throw new Error(`WebDriver ${method} ${pathname} failed: ${detail}`);
    }
    return payload?.value ?? null;
  }

  sessionCommand(method, pathname, body, timeoutMs) {
    return this.command(method, `/session/${this.sessionId}${pathname}`, body, timeoutMs);
  }

  async createSession() {
    this.profileDir = fs.mkdtempSync(path.join(os.tmpdir(), "coto-chromium-"));
    // Requests to other hosts go to this closed local port and fail, so that the browser
    // cannot reach another address. Since version 72, Chromium sends requests to localhost,
    // 127.0.0.0/8, [::1] and link-local addresses directly, bypassing any proxy
    // (net/docs/proxy.md in the Chromium source).
    const deadProxyPort = await findFreePort();
    const args = [
      "--headless=new",
      "--no-sandbox",
      "--enable-unsafe-webgpu",
      "--enable-features=Vulkan",
      "--use-vulkan=swiftshader",
      "--use-webgpu-adapter=swiftshader",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      `--user-data-dir=${this.profileDir}`,
      `--proxy-server=http://127.0.0.1:${deadProxyPort}`,
      "--window-size=1280,1000",
    ];
    const capabilities = {
      alwaysMatch: {
        browserName: "chrome",
        "goog:chromeOptions": { binary: this.options.chromium, args },
        "goog:loggingPrefs": { browser: "ALL" },
        timeouts: { script: SCRIPT_TIMEOUT_MS, pageLoad: PAGE_LOAD_TIMEOUT_MS, implicit: 0 },
      },
    };
    const value = await this.command("POST", "/session", { capabilities }, 120_000);
    this.sessionId = value.sessionId;
    return value.capabilities;
  }

  /** Runs `script` (a function body) in the page and returns its result. */
  execute(script, args = []) {
    return this.sessionCommand("POST", "/execute/sync", { script, args });
  }

  /**
   * Runs `script` in the page with a callback as its last argument, and returns the value
   * passed to the callback.
   */
  executeAsync(script, args = []) {
    return this.sessionCommand("POST", "/execute/async", { script, args }, SCRIPT_TIMEOUT_MS + 30_000);
  }

  async open(url) {
    await this.sessionCommand("POST", "/url", { url }, PAGE_LOAD_TIMEOUT_MS + 10_000);
  }

  /** Saves a PNG of the page, with the window `height` pixels tall. */
  async screenshot(file, height) {
    try {
      await this.sessionCommand("POST", "/window/rect", { width: 1280, height });
      await this.execute("return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));");
    } catch (error) {
      console.error(`Resizing the window for the screenshot failed: ${error.message}`);
    }
    const png = await this.sessionCommand("GET", "/screenshot");
    fs.writeFileSync(file, Buffer.from(png, "base64"));
  }

  /** Writes the browser console's messages to `file`. */
  async consoleLog(file) {
    const entries = await this.sessionCommand("POST", "/se/log", { type: "browser" });
    const lines = (entries ?? []).map((entry) => `${new Date(entry.timestamp).toISOString()} ${entry.level} ${entry.message}`);
    fs.writeFileSync(file, lines.join("\n") + (lines.length > 0 ? "\n" : ""));
  }

  /** Stops the session, chromedriver and the browser, and deletes the browser profile. */
  async stop() {
    // After Ctrl-C, chromedriver and the browser receive the signal too and may be exiting.
    if (this.sessionId !== null && !this.exited) {
      const sessionId = this.sessionId;
      this.sessionId = null;
      try {
        await this.command("DELETE", `/session/${sessionId}`, undefined, 30_000);
      } catch (error) {
        await sleep(500);
        if (!this.exited) {
          console.error(`Deleting the WebDriver session failed: ${error.message}`);
        }
      }
    }
    if (this.process !== null && !this.exited) {
      this.process.kill("SIGTERM");
      const deadline = Date.now() + 5000;
      while (!this.exited && Date.now() < deadline) {
        await sleep(100);
      }
      if (!this.exited) {
        this.process.kill("SIGKILL");
      }
    }
    if (this.profileDir !== null) {
      try {
        // The retries give a browser that is still exiting time to close its files.
        fs.rmSync(this.profileDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 300 });
      } catch (error) {
        console.error(`Deleting the browser profile ${this.profileDir} failed: ${error.message}`);
      }
      this.profileDir = null;
    }
  }
}

// The state read from the page. JSON round-tripping drops the helper functions.
const READ_STATE_SCRIPT = `
  const page = window.cotoPage;
  if (!page) {
    return null;
  }
  return JSON.parse(JSON.stringify({
    status: page.status,
    error: page.error,
    device: page.device,
    totalSteps: page.totalSteps,
    stepCount: page.stepCount,
    losses: page.losses,
    evaluations: page.evaluations,
    stepsPerSecond: page.stepsPerSecond,
    keptStateStep: page.keptStateStep,
    deviceLost: page.deviceLost,
    deviceHistory: page.deviceHistory,
  }));
`;

const LOSE_GPU_SCRIPT = `
  const devices = window.cotoPage.gpuDevices;
  for (const device of devices) {
    device.destroy();
  }
  return devices.length;
`;

const CONTINUE_SCRIPT = `
  const button = document.getElementById("continue-button");
  if (button === null || button.hidden) {
    return false;
  }
  button.click();
  return true;
`;

const PREDICT_SCRIPT = `
  const done = arguments[arguments.length - 1];
  window.cotoPage.predict(arguments[0]).then(
    (result) => done({ result: JSON.parse(JSON.stringify(result)) }),
    (error) => done({ error: String((error && error.message) || error) }),
  );
`;

const EXPORT_SCRIPT = `
  const done = arguments[arguments.length - 1];
  window.cotoPage.exportAdapterBase64().then(
    (files) => done({ result: files }),
    (error) => done({ error: String((error && error.message) || error) }),
  );
`;

function describeProgress(state) {
  const parts = [`status ${state.status}`, `step ${state.stepCount}/${state.totalSteps}`];
  const loss = state.losses?.[state.losses.length - 1];
  if (typeof loss === "number") {
    parts.push(`loss ${loss.toFixed(4)}`);
  }
  if (typeof state.stepsPerSecond === "number") {
    parts.push(`${state.stepsPerSecond.toFixed(2)} steps/s`);
  }
  const evaluation = state.evaluations?.[state.evaluations.length - 1];
  if (evaluation) {
    parts.push(`accuracy ${(evaluation.accuracy * 100).toFixed(2)}% at step ${evaluation.step}`);
  }
  if (state.device) {
    parts.push(state.device);
  }
  return parts.join(", ");
}

/**
 * Polls the page until the run is done or failed, or the timeout passes. With `loseGpuAt`, it
 * destroys the GPU devices once the run has passed that step and kept a state. Then it
 * continues on the CPU when the page offers it, and records what happened in `recovery`.
 */
async function waitForRun(driver, timeoutSeconds, loseGpuAt, recovery) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let state = null;
  let lastPrinted = 0;
  let lastStep = -1;
  for (;;) {
    state = await driver.execute(READ_STATE_SCRIPT);
    if (state !== null) {
      const now = Date.now();
      if (state.stepCount !== lastStep && now - lastPrinted >= PROGRESS_INTERVAL_MS) {
        console.log(describeProgress(state));
        lastPrinted = now;
        lastStep = state.stepCount;
      }
      const due = loseGpuAt !== null && recovery.lostAtStep === null;
      if (due && state.status === "training" && state.stepCount >= loseGpuAt && state.keptStateStep > 0) {
        const destroyed = await driver.execute(LOSE_GPU_SCRIPT);
        recovery.lostAtStep = state.stepCount;
        console.log(`Destroyed ${destroyed} GPU device(s) at step ${state.stepCount}.`);
      } else if (recovery.lostAtStep !== null && recovery.continuedFrom === null && state.deviceLost?.step > 0) {
        if (await driver.execute(CONTINUE_SCRIPT)) {
          recovery.continuedFrom = state.deviceLost.step;
          recovery.message = state.error;
          console.log(`The page reported the lost GPU; continuing on the CPU from step ${state.deviceLost.step}.`);
        }
      } else if (state.status === "done" || state.status === "error") {
        return state;
      }
    }
    if (Date.now() > deadline) {
      const last = state === null ? "window.cotoPage never appeared" : `last status ${state.status} at step ${state.stepCount} of ${state.totalSteps}`;
      const timedOut = state ?? { status: "loading", error: null, device: null, losses: [], evaluations: [], stepsPerSecond: null };
      return { ...timedOut, timedOut: true, error: `Timed out after ${timeoutSeconds} s waiting for the run to finish (${last}).` };
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

async function saveScreenshot(driver, file) {
  let height = 1000;
  try {
    height = await driver.execute("return document.documentElement.scrollHeight;");
  } catch (error) {
    console.error(`Reading the page height failed: ${error.message}`);
  }
  await driver.screenshot(file, Math.min(MAX_SCREENSHOT_HEIGHT, Math.max(600, Number(height) || 1000)));
}

async function saveConsoleLog(driver, file) {
  try {
    await driver.consoleLog(file);
  } catch (error) {
    fs.writeFileSync(file, `Reading the browser console failed: ${error.message}\n`);
  }
}

async function main() {
  let options;
  try {
    options = parseArguments(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`${error.message}\n\n${USAGE}`);
      process.exit(2);
    }
    throw error;
  }

  fs.mkdirSync(options.out, { recursive: true });
  const driver = options.browser === "firefox" ? new FirefoxDriver(options, await findFreePort()) : new Driver(options);
  const stopOnSignal = async (signal) => {
    console.error(`Received ${signal}; stopping the browser.`);
    await driver.stop();
    process.exit(1);
  };
  process.once("SIGINT", stopOnSignal);
  process.once("SIGTERM", stopOnSignal);

  const result = {
    url: options.url,
    status: null,
    error: null,
    device: null,
    totalSteps: null,
    stepCount: null,
    losses: [],
    evaluations: [],
    stepsPerSecond: null,
    predictions: [],
    adapterFiles: [],
    deviceHistory: [],
    recovery: { lostAtStep: null, continuedFrom: null, message: null },
  };
  const failures = [];

  try {
    await driver.start(path.join(options.out, options.browser === "firefox" ? "firefox.log" : "chromedriver.log"));
    const capabilities = await driver.createSession();
    console.log(`Browser: ${capabilities?.browserName} ${capabilities?.browserVersion}; opening ${options.url}`);
    await driver.open(options.url);

    const state = await waitForRun(driver, options.timeout, options.loseGpuAt, result.recovery);
    Object.assign(result, {
      status: state.status,
      error: state.error,
      device: state.device,
      totalSteps: state.totalSteps ?? null,
      stepCount: state.stepCount ?? null,
      losses: state.losses ?? [],
      evaluations: state.evaluations ?? [],
      stepsPerSecond: state.stepsPerSecond ?? null,
      deviceHistory: state.deviceHistory ?? [],
    });
    if (state.timedOut) {
      result.status = "timeout";
    }
    if (options.loseGpuAt !== null && result.recovery.continuedFrom === null) {
      failures.push("The page never offered to continue on the CPU after the GPU was lost.");
    }
    console.log(describeProgress({ ...state, status: result.status }));

    await saveScreenshot(driver, path.join(options.out, "screenshot.png"));

    if (result.status === "done") {
      for (const text of options.texts) {
        const answer = await driver.executeAsync(PREDICT_SCRIPT, [text]);
        if (answer?.error) {
          failures.push(`Predicting ${JSON.stringify(text)} failed: ${answer.error}`);
          result.predictions.push({ text, error: answer.error });
        } else {
          const { label, logits } = answer.result;
          result.predictions.push({ text, label, logits });
          console.log(`${JSON.stringify(text)} → ${label} (logits ${logits.map((value) => value.toFixed(3)).join(", ")})`);
        }
      }

      const exported = await driver.executeAsync(EXPORT_SCRIPT);
      if (exported?.error) {
        failures.push(`Exporting the adapter failed: ${exported.error}`);
      } else {
        const adapterDir = path.join(options.out, "adapter");
        fs.mkdirSync(adapterDir, { recursive: true });
        for (const [name, base64] of Object.entries(exported.result ?? {})) {
          // The names come from the page, so only plain file names are written.
          if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.startsWith(".")) {
            failures.push(`The page exported a file with an invalid name: ${JSON.stringify(name)}`);
            continue;
          }
          const bytes = Buffer.from(base64, "base64");
          fs.writeFileSync(path.join(adapterDir, name), bytes);
          result.adapterFiles.push({ name, bytes: bytes.length });
        }
        console.log(`Adapter files: ${result.adapterFiles.map((file) => `${file.name} (${file.bytes} bytes)`).join(", ")}`);
      }
    }
    await saveConsoleLog(driver, path.join(options.out, "console.log"));
  } catch (error) {
    failures.push(error.message);
    if (result.status === null) {
      result.status = "error";
    }
  } finally {
    await driver.stop();
  }

  if (failures.length > 0) {
    result.error = [result.error, ...failures].filter(Boolean).join("\n");
  }
  fs.writeFileSync(path.join(options.out, "result.json"), JSON.stringify(result, null, 2) + "\n");

  if (result.status === "done" && failures.length === 0) {
    console.log(`Done; results in ${options.out}`);
    process.exit(0);
  }
  console.error(`Failed (status ${result.status}): ${result.error ?? "no error message"}`);
  process.exit(1);
}

main().catch((error) => {
  console.error(error.stack ?? String(error));
  process.exit(1);
});
