// Firefox for drive.mjs, through puppeteer-core and WebDriver BiDi (Firefox ships no
// chromedriver-style HTTP endpoint without geckodriver). The class has the same methods as
// drive.mjs's Chromium driver, so the run logic is shared.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const LAUNCH_TIMEOUT_MS = 120_000;

export class FirefoxDriver {
  constructor(options, deadProxyPort) {
    this.options = options;
    this.deadProxyPort = deadProxyPort;
    this.browser = null;
    this.page = null;
    this.consoleLines = [];
    this.logPath = null;
  }

  async start(logPath) {
    this.logPath = logPath;
  }

  /** Starts Firefox and opens a tab. Returns `{browserName, browserVersion}`. */
  async createSession() {
    let puppeteer;
    try {
      puppeteer = (await import("puppeteer-core")).default;
    } catch (error) {
      throw new Error(`puppeteer-core is missing (${error.message}); run \`npm ci --prefix web/e2e\`.`);
    }
    this.profileDir = fs.mkdtempSync(path.join(os.tmpdir(), "coto-firefox-"));
    this.browser = await puppeteer.launch({
      browser: "firefox",
      executablePath: this.options.firefox,
      headless: true,
      userDataDir: this.profileDir,
      timeout: LAUNCH_TIMEOUT_MS,
      defaultViewport: { width: 1280, height: 1000 },
      extraPrefsFirefox: {
        // Firefox ESR 153 on Linux has no navigator.gpu without the first preference, and
        // requestAdapter() returns null for Mesa's llvmpipe without the second.
        "dom.webgpu.enabled": true,
        "gfx.webgpu.ignore-blocklist": true,
        // Requests to other hosts go to this closed local port and fail. Firefox sends requests
        // for localhost and 127.0.0.1 directly while network.proxy.allow_hijacking_localhost is false.
        "network.proxy.type": 1,
        "network.proxy.http": "127.0.0.1",
        "network.proxy.http_port": this.deadProxyPort,
        "network.proxy.ssl": "127.0.0.1",
        "network.proxy.ssl_port": this.deadProxyPort,
        "network.proxy.allow_hijacking_localhost": false,
      },
    });
    this.page = await this.browser.newPage();
    this.page.setDefaultTimeout(0);
    this.page.on("console", (message) => {
      this.consoleLines.push(`${new Date().toISOString()} ${message.type().toUpperCase()} ${message.text()}`);
    });
    this.page.on("pageerror", (error) => {
      this.consoleLines.push(`${new Date().toISOString()} PAGEERROR ${error.message}`);
    });
    const version = await this.browser.version();
    fs.writeFileSync(this.logPath, `${version}\n`);
    return { browserName: "firefox", browserVersion: version.replace(/^[^/]*\//, "") };
  }

  async open(url) {
    await this.page.goto(url, { waitUntil: "load", timeout: LAUNCH_TIMEOUT_MS });
  }

  /** Runs `script` (a function body) in the page and returns its result. */
  execute(script, args = []) {
    return this.page.evaluate((body, values) => new Function(body)(...values), script, args);
  }

  /** Runs `script` with a callback as its last argument and returns what the callback receives. */
  executeAsync(script, args = []) {
    return this.page.evaluate(
      (body, values) => new Promise((resolve) => new Function(body)(...values, resolve)),
      script,
      args,
    );
  }

  async screenshot(file, height) {
    await this.page.setViewport({ width: 1280, height });
    await this.page.screenshot({ path: file });
  }

  async consoleLog(file) {
    fs.writeFileSync(file, this.consoleLines.join("\n") + (this.consoleLines.length > 0 ? "\n" : ""));
  }

  async stop() {
    if (this.browser !== null) {
      const browser = this.browser;
      this.browser = null;
      await browser.close().catch((error) => console.error(`Closing Firefox failed: ${error.message}`));
    }
    if (this.profileDir) {
      fs.rmSync(this.profileDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 300 });
      this.profileDir = null;
    }
  }
}
