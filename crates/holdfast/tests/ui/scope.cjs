// A user scoped to plans by label, signed in with a password, in Debian's headless Chromium.
// Called by the Rust test `ui::scope::...` with: URL USER PASSWORD HIDDEN_PLAN HIDDEN_JOB.
// Prints one JSON line with what it saw; any failed expectation throws (exit code 1).
"use strict";
const { launch } = require("./browser.cjs");

const [url, user, password, hiddenPlan, hiddenJob] = process.argv.slice(2);
(async () => {
const browser = await launch();
const seen = {};
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(url + "/ui/login");
  await page.fill("#user", user);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("#plans");
  seen.who = await page.textContent("#who");
  seen.plans = await page.$$eval("#plans tbody tr", (rs) => rs.map((r) => r.dataset.plan).sort());
  seen.auditLink = await page.locator("header a[href='/ui/audit']").count();
  let r = await page.goto(url + "/ui/plans/" + hiddenPlan);
  seen.hiddenPlanStatus = r.status();
  r = await page.goto(url + "/ui/jobs/" + hiddenJob);
  seen.hiddenJobStatus = r.status();
  await page.goto(url + "/ui/jobs");
  seen.jobPlans = await page.$$eval("#jobs tbody tr td:nth-child(3)", (ts) => ts.map((t) => t.textContent));
  // The hidden plan's Run now, posted anyway with this session's CSRF token.
  const csrf = await page.getAttribute("input[name=csrf]", "value");
  seen.forcedRun = await page.evaluate(async ([csrf, plan]) => {
    const r = await fetch("/ui/plans/" + plan + "/run", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "csrf=" + encodeURIComponent(csrf),
      redirect: "manual",
    });
    return r.status;
  }, [csrf, hiddenPlan]);
  // A new plan's form starts with the session's labels.
  await page.goto(url + "/ui/plans/new");
  seen.newPlanLabels = await page.inputValue("input[name=labels]");
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
})().catch((e) => { console.error(e); process.exit(1); });
