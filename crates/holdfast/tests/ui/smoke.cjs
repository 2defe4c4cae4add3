// Drives the web UI in Debian's headless Chromium with playwright-core (installed by
// scripts/services). Called by the Rust test `ui::...` with: URL TOKEN GO_FILE SHOT_DIR.
// Prints one JSON line with what it saw; any failed expectation throws (exit code 1).
"use strict";
const { launch } = require("./browser.cjs");
const { writeFileSync } = require("node:fs");

const [url, token, goFile, shots] = process.argv.slice(2);
(async () => {
const browser = await launch();
const fail = (m) => { throw new Error(m); };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url + "/");
  if (!page.url().endsWith("/ui/login")) fail("not sent to sign-in: " + page.url());

  await page.fill("#token", "not-a-token");
  await page.click("button[type=submit]");
  const err = await page.textContent("#login-error");
  if (!/unknown, revoked or expired token/.test(err)) fail("no error beside the form: " + err);

  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#plans");
  const row = page.locator("tr[data-plan=nightly]");
  const status = await row.locator(".badge").textContent();
  await page.screenshot({ path: shots + "/ui-dashboard.png", fullPage: true });

  await row.locator("button.run").click();
  await page.waitForURL(/\/ui\/jobs\/\d+$/);
  const jobUrl = page.url();
  // The dump waits for GO_FILE: the page must show "running" by itself, then "succeeded".
  await page.waitForFunction(() => document.getElementById("state").textContent === "running");
  writeFileSync(goFile, "");
  await page.waitForFunction(() => document.getElementById("state").textContent === "succeeded",
                             null, { timeout: 60000 });
  const progress = await page.getAttribute("#progress", "value");
  const snapshot = await page.textContent("#snapshot");
  const log = await page.textContent("#log");
  // Filled in live, not by a reload: the steps table, and the log's times in local time.
  const steps = await page.locator("#steps tbody tr").count();
  const logTime = await page.locator("#log time").first().textContent();
  const reloads = await page.evaluate(() => performance.getEntriesByType("navigation").length);
  await page.screenshot({ path: shots + "/ui-job.png", fullPage: true });
  console.log(JSON.stringify({ status, jobUrl, progress, snapshot, log, reloads, steps, logTime }));
} finally {
  await browser.close();
}
})().catch((e) => { console.error(e); process.exit(1); });
