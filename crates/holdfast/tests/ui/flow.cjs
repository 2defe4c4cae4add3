// The whole path through the UI in Debian's headless Chromium (playwright-core): create an
// endpoint (and test it), a PostgreSQL source and a plan through the forms (a bad cron shows
// its error beside the field, live and on submit), run it, follow the job to success, restore
// it into a new database. Args: URL TOKEN DB_URL DB_PASSWORD REPO_DIR NEW_DB SHOT_DIR.
"use strict";
const { launch, signedIn } = require("./browser.cjs");

const [url, token, dbUrl, dbPassword, repoDir, newDb, shots] = process.argv.slice(2);
const fail = (m) => { throw new Error(m); };
(async () => {
  const browser = await launch();
  const seen = {};
  try {
    const page = await signedIn(browser, url, token);

    // Endpoint: a local directory, then "Test connection".
    await page.goto(url + "/ui/endpoints");
    await page.fill("#name", "disk");
    await page.selectOption("#kind", "local");
    await page.fill("#url", repoDir);
    await page.fill("#password", "ui repository password");
    await page.click("form.edit button[type=submit]");
    await page.waitForSelector("tr[data-endpoint=disk]");
    await page.click("tr[data-endpoint=disk] button.test");
    await page.waitForSelector("#test-report");
    seen.test = await page.textContent("#test-report h2");
    seen.checks = await page.$$eval("#test-report li", (l) => l.map((x) => x.dataset.check));
    await page.screenshot({ path: shots + "/ui-endpoints.png", fullPage: true });

    // Edit it: a bad prune schedule is shown beside its field; a good one is saved, and the
    // password left empty stays set.
    await page.click("tr[data-endpoint=disk] a");
    // Every field a kind needs, the SFTP key among them, and a test from the edit page.
    seen.sshKeyField = await page.locator("textarea#ssh_key").count();
    seen.editTest = await page.locator("button.test").count();
    await page.fill("#prune_schedule", "every sunday");
    await page.click("form.edit button[type=submit]");
    await page.waitForSelector("#prune_schedule-error");
    seen.pruneError = await page.textContent("#prune_schedule-error");
    await page.fill("#prune_schedule", "0 5 * * 6");
    await page.click("form.edit button[type=submit]");
    await page.waitForURL(/\/ui\/endpoints$/);

    // Source: the PostgreSQL database.
    await page.goto(url + "/ui/sources");
    await page.fill("#name", "shop");
    await page.selectOption("#kind", "postgres");
    await page.fill("#url", dbUrl);
    await page.fill("#password", dbPassword);
    await page.click("form.edit button[type=submit]");
    await page.waitForSelector("#sources tbody tr");

    // Plan: a bad cron first.
    await page.goto(url + "/ui/plans/new");
    await page.fill("#name", "shop-nightly");
    await page.selectOption("#source", "shop");
    await page.selectOption("#endpoint", "disk");
    await page.fill("#schedule", "61 * * * *");
    await page.waitForFunction(() => document.getElementById("cron-error").textContent !== "");
    seen.liveCronError = await page.textContent("#cron-error");
    await page.click("form.edit button[type=submit]");
    await page.waitForSelector("#schedule-error");
    seen.cronError = await page.textContent("#schedule-error");
    await page.screenshot({ path: shots + "/ui-plan-error.png", fullPage: true });
    await page.fill("#schedule", "30 2 * * *");
    await page.fill("#timezone", "Europe/Berlin");
    await page.waitForFunction(() => document.querySelectorAll("#next-runs li").length === 5);
    seen.nextRuns = await page.$$eval("#next-runs li", (l) => l.map((x) => x.textContent));
    await page.click("form.edit button[type=submit]");
    await page.waitForURL(/\/ui\/plans\/shop-nightly$/);

    // Run it now from the plans page and follow the job.
    await page.goto(url + "/");
    await page.click("tr[data-plan=shop-nightly] button.run");
    await page.waitForURL(/\/ui\/jobs\/\d+$/);
    await page.waitForFunction(() => ["succeeded", "failed"].includes(
      document.getElementById("state").textContent), null, { timeout: 90000 });
    seen.backup = await page.textContent("#state");
    if (seen.backup !== "succeeded") fail("backup: " + (await page.textContent("#job")));

    // Pause and resume it.
    await page.goto(url + "/ui/plans/shop-nightly");
    await page.click("#pause");
    await page.waitForSelector("#paused");
    seen.paused = await page.textContent("#pause");
    await page.click("#pause");
    await page.waitForFunction(() => !document.getElementById("paused"));
    seen.retention = await page.textContent("#settings #retention");
    seen.copy = await page.textContent("#settings #copy");

    // The endpoints page says what the repository holds (read in the background).
    await page.goto(url + "/ui/endpoints");
    await page.waitForFunction(() => {
      const c = document.querySelector("tr[data-endpoint=disk] td.holds");
      if (c && /restore points?,/.test(c.textContent)) return true;
      location.reload();
      return false;
    }, null, { timeout: 30000, polling: 500 });
    seen.holds = await page.textContent("tr[data-endpoint=disk] td.holds");
    await page.goto(url + "/ui/plans/shop-nightly");

    // Overwriting asks first; saying no sends nothing.
    await page.click("#restore-points tbody tr:first-child summary");
    const first = page.locator("#restore-points tbody tr:first-child form");
    await first.locator("[name=force]").check();
    page.once("dialog", (d) => { seen.confirm = d.message(); d.dismiss(); });
    await first.locator("button[type=submit]").click();
    if (!/\/ui\/plans\/shop-nightly$/.test(page.url())) fail("restore sent without asking");
    await page.reload();

    // Restore it into a new database.
    await page.click("#restore-points tbody tr:first-child summary");
    const form = page.locator("#restore-points tbody tr:first-child form");
    await form.locator("[name=database]").fill(newDb);
    await form.locator("[name=create]").check();
    await page.screenshot({ path: shots + "/ui-restore.png", fullPage: true });
    await form.locator("button[type=submit]").click();
    await page.waitForURL(/\/ui\/jobs\/\d+$/);
    seen.restoreJob = page.url();
    await page.waitForFunction(() => ["succeeded", "failed"].includes(
      document.getElementById("state").textContent), null, { timeout: 90000 });
    seen.restore = await page.textContent("#state");
    if (seen.restore !== "succeeded") fail("restore: " + (await page.textContent("#job")));
    console.log(JSON.stringify(seen));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
