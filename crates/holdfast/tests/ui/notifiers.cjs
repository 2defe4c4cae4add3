// Notifiers through the UI in Debian's headless Chromium (playwright-core): a webhook whose URL
// cannot be reached is refused beside its field; a good one is created, sent a test (the
// receiver's answer is shown), edited with its secrets left empty (they stay set), and deleted
// after a confirmation that names it. The dashboard warns about a notifier that cannot deliver.
// Args: URL TOKEN RECEIVER_URL CLOSED_URL BROKEN_NOTIFIER SHOT_DIR.
"use strict";
const { launch, signedIn } = require("./browser.cjs");

const [url, token, receiver, closed, broken, shots] = process.argv.slice(2);
(async () => {
  const browser = await launch();
  const seen = {};
  try {
    const page = await signedIn(browser, url, token);
    seen.warning = await page.locator(`p.notifier-warning:has-text("${broken}")`).count();
    await page.goto(url + "/ui/notifiers/" + broken);
    seen.deliveryRow = await page.textContent("#deliveries tbody tr");

    await page.goto(url + "/ui/notifiers");
    await page.fill("#name", "ops-hook");
    await page.selectOption("#kind", "webhook");
    await page.fill("#url", closed);
    await page.fill("#secret", "ui-signing-secret");
    await page.click("form.edit button[type=submit]");
    await page.waitForSelector("#url-error");
    seen.urlError = await page.textContent("#url-error");
    seen.secretEchoed = (await page.content()).includes("ui-signing-secret");

    await page.selectOption("#kind", "webhook");
    await page.fill("#url", receiver + "/ui-hook");
    await page.fill("#secret", "ui-signing-secret");
    await page.check("#default");
    await page.click("form.edit button[type=submit]");
    await page.waitForSelector("tr[data-notifier=ops-hook]");
    await page.click("tr[data-notifier=ops-hook] button.test");
    await page.waitForSelector("#test-report");
    seen.report = await page.textContent("#test-report");
    await page.screenshot({ path: shots + "/ui-notifiers.png", fullPage: true });

    await page.click("tr[data-notifier=ops-hook] a");
    await page.fill("#max_per_hour", "30");
    await page.click("form.edit button[type=submit]");
    await page.waitForURL(/\/ui\/notifiers$/);
    seen.sendsToAfterEdit = await page.textContent("tr[data-notifier=ops-hook] td:nth-child(3)");

    let dialog = "";
    page.once("dialog", (d) => { dialog = d.message(); d.dismiss(); });
    await page.click("tr[data-notifier=ops-hook] button.delete");
    seen.keptAfterDismiss = await page.locator("tr[data-notifier=ops-hook]").count();
    seen.dialog = dialog;
    page.once("dialog", (d) => d.accept());
    await Promise.all([page.waitForNavigation(), page.click("tr[data-notifier=ops-hook] button.delete")]);
    seen.afterDelete = await page.locator("tr[data-notifier=ops-hook]").count();
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
})().catch((e) => { console.error(e); process.exit(1); });
