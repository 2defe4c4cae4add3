// Restore drills through the UI in Debian's headless Chromium (playwright-core): "Run drill
// now" on a plan's page leads to the drill's job, whose page shows the result and the report
// with its downloads once the drill ran; the plan's page then carries the badge ("verified
// <time>, restored in N s") and so does the restore point's row.
// Args: URL TOKEN PLAN SHOT_DIR.
"use strict";
const { launch, signedIn } = require("./browser.cjs");

const [url, token, plan, shots] = process.argv.slice(2);
(async () => {
  const browser = await launch();
  const seen = {};
  try {
    const page = await signedIn(browser, url, token);
    await page.goto(url + "/ui/plans/" + plan);
    seen.pointBefore = (await page.textContent("#restore-points td.verified")).trim();
    await Promise.all([page.waitForURL(/\/ui\/jobs\/\d+$/), page.click("#verify")]);
    seen.jobUrl = page.url();
    // The job page shows the report once the agent sent it: reload until then (two minutes).
    const deadline = Date.now() + 120000;
    while ((await page.locator("#drill-result").count()) === 0) {
      if (Date.now() > deadline) throw new Error("no drill result on " + page.url());
      await page.waitForTimeout(250);
      await page.reload();
    }
    seen.result = (await page.textContent("#drill-result")).trim();
    seen.report = await page.textContent("#drill-report");
    const href = await page.getAttribute("#drill-download", "href");
    const download = await page.request.get(url + href);
    seen.downloadStatus = download.status();
    seen.download = await download.text();
    await page.screenshot({ path: shots + "/ui-drill-report.png", fullPage: true });

    await page.goto(url + "/ui/plans/" + plan);
    seen.badge = (await page.textContent("#last-drill")).trim();
    seen.badgeClass = await page.getAttribute("#last-drill", "class");
    seen.pointAfter = (await page.textContent("#restore-points td.verified")).trim();
    await page.screenshot({ path: shots + "/ui-drill.png", fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
})().catch((e) => { console.error(e); process.exit(1); });
