// Editing and deleting through the UI in Debian's headless Chromium (playwright-core), as an
// admin: a source's database changed (its password not shown, kept), a plan's schedule changed,
// a bad cron refused beside its field, two tabs editing one plan (the second save is refused as
// "changed meanwhile"), an endpoint a plan uses refused with the server's 409, a plan deleted
// after a confirmation naming what stays, then its source. An operator edits a hooked plan's
// schedule without being shown its hooks.
// Args: URL TOKEN OPERATOR OPERATOR_PASSWORD. Prints one JSON line with what it saw.
"use strict";
const { launch } = require("./browser.cjs");

const [url, token, operator, operatorPassword] = process.argv.slice(2);
const fail = (m) => { throw new Error(m); };
(async () => {
  const browser = await launch();
  const seen = {};
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.on("dialog", (d) => fail("no JavaScript dialog expected: " + d.message()));
    await page.goto(url + "/ui/login");
    await page.fill("#token", token);
    await page.click("button[type=submit]");
    await page.waitForSelector("#plans");

    // A source: its page shows the stored address, never its password; a new database saved.
    await page.goto(url + "/ui/sources");
    await page.click("tr[data-source=shop] a");
    await page.waitForSelector("form.edit");
    seen.sourceUrl = await page.inputValue("#url");
    seen.sourcePasswordField = await page.inputValue("#password");
    seen.sourceUsedBy = await page.textContent("#used-by");
    seen.secretShown = (await page.content()).includes("ui-source-secret");
    await page.fill("#url", seen.sourceUrl.replace(/\/shop$/, "/shop_v2"));
    await Promise.all([page.waitForURL(/\/ui\/sources$/), page.click("form.edit button[type=submit]")]);
    seen.sourceRow = await page.textContent("tr[data-source=shop]");

    // A plan: the Edit form, prefilled from the plan; a new schedule saved.
    await page.goto(url + "/ui/plans/shop-nightly");
    await page.click("#edit");
    await page.waitForSelector("#schedule");
    seen.editSchedule = await page.inputValue("#schedule");
    seen.editKeepDaily = await page.inputValue("#keep_daily");
    seen.adminHookFields = await page.locator("textarea[name^=hook_]").count();
    await page.fill("#schedule", "15 2 * * *");
    await page.waitForSelector("#next-runs li:has-text('02:15')");
    await Promise.all([page.waitForURL(/\/ui\/plans\/shop-nightly$/),
                       page.click("form.edit button[type=submit]")]);
    seen.planLine = await page.textContent("#summary");

    // A bad cron: the field's error, nothing saved.
    await page.click("#edit");
    await page.fill("#schedule", "61 * * * *");
    await page.click("form.edit button[type=submit]");
    await page.waitForSelector("#schedule-error");
    seen.cronError = await page.textContent("#schedule-error");
    seen.cronKept = await page.inputValue("#schedule");

    // Two tabs edit the same plan: the one that saves second is told, and changes nothing.
    const other = await context.newPage();
    await page.goto(url + "/ui/plans/shop-nightly/edit");
    await other.goto(url + "/ui/plans/shop-nightly/edit");
    await other.fill("#schedule", "30 4 * * *");
    await Promise.all([other.waitForURL(/\/ui\/plans\/shop-nightly$/),
                       other.click("form.edit button[type=submit]")]);
    await page.fill("#schedule", "45 5 * * *");
    await page.click("form.edit button[type=submit]");
    await page.waitForSelector("p.form-error");
    seen.meanwhile = await page.textContent("p.form-error");
    await other.close();

    // An endpoint a plan uses: the confirmation says so; the server's refusal is shown.
    await page.goto(url + "/ui/endpoints/local");
    await page.click("a.delete");
    await page.waitForSelector("#consequences");
    seen.endpointConsequences = await page.textContent("#consequences");
    await page.fill("#confirm", "local");
    await page.click("form.confirm button[type=submit]");
    await page.waitForSelector("#delete-error");
    seen.endpointRefused = await page.textContent("#delete-error");

    // A plan: the confirmation names it and what stays; once confirmed it is gone.
    await page.goto(url + "/ui/plans/nightly");
    await page.click("a.delete");
    await page.waitForSelector("#consequences");
    seen.planTitle = await page.textContent("h1");
    seen.planConsequences = await page.textContent("#consequences");
    await page.fill("#confirm", "nightly");
    await Promise.all([page.waitForURL(url + "/"), page.click("form.confirm button[type=submit]")]);
    seen.planRowsAfter = await page.locator("tr[data-plan=nightly]").count();

    // Its source, now that no plan backs it up.
    await page.goto(url + "/ui/sources/gen");
    seen.genUsedBy = await page.textContent("#used-by");
    await page.click("a.delete");
    await page.waitForSelector("#consequences");
    seen.sourceConsequences = await page.textContent("#consequences");
    await page.fill("#confirm", "gen");
    await Promise.all([page.waitForURL(/\/ui\/sources$/), page.click("form.confirm button[type=submit]")]);
    seen.genRowsAfter = await page.locator("tr[data-source=gen]").count();

    // An operator: no hook fields, and a schedule change that leaves the hooks alone is saved.
    const op = await (await browser.newContext()).newPage();
    await op.goto(url + "/ui/login");
    await op.fill("#user", operator);
    await op.fill("#password", operatorPassword);
    await op.click("button[type=submit]");
    await op.waitForSelector("#plans");
    await op.goto(url + "/ui/plans/hooked");
    await op.click("#edit");
    await op.waitForSelector("#schedule");
    seen.operatorHookFields = await op.locator("[name^=hook_]").count();
    await op.fill("#schedule", "@weekly");
    await Promise.all([op.waitForURL(/\/ui\/plans\/hooked$/), op.click("form.edit button[type=submit]")]);
    seen.operatorPlanLine = await op.textContent("#summary");
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
})().catch((e) => { console.error(e); process.exit(1); });
