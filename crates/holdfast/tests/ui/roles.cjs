// Signing in with a password, what a viewer is shown, and signing out, in Debian's headless
// Chromium. Called by the Rust test `ui::...` with: URL USER PASSWORD.
// Prints one JSON line with what it saw; any failed expectation throws (exit code 1).
"use strict";
const { chromium } = require("playwright-core"); // found through NODE_PATH

const [url, user, password] = process.argv.slice(2);
(async () => {
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const fail = (m) => { throw new Error(m); };
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url + "/ui/login");
  await page.fill("#user", user);
  await page.fill("#password", password + "-wrong");
  await page.click("button[type=submit]");
  const wrong = await page.textContent("#login-error");
  await page.fill("#user", user);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("#plans");
  const runButtons = await page.locator("button.run").count();
  await page.goto(url + "/ui/endpoints");
  const endpointForms = await page.locator("form.edit").count();
  const endpointTests = await page.locator("button.test").count();
  // The form the page does not show, posted anyway with this session's CSRF token.
  const csrf = await page.getAttribute("input[name=csrf]", "value");
  const forced = await page.evaluate(async ([csrf]) => {
    const r = await fetch("/ui/plans/nightly/run", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "csrf=" + encodeURIComponent(csrf),
      redirect: "manual",
    });
    return r.status;
  }, [csrf]);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "holdfast_session");
  await page.click("text=Sign out");
  await page.waitForURL(/\/ui\/login$/);
  // The old cookie, replayed after signing out, opens nothing.
  const replay = await browser.newContext();
  await replay.addCookies([session]);
  const again = await replay.newPage();
  await again.goto(url + "/");
  const afterSignOut = again.url();
  console.log(JSON.stringify({
    wrong, runButtons, endpointForms, endpointTests, forced, afterSignOut,
    httpOnly: session.httpOnly, sameSite: session.sameSite,
  }));
} finally {
  await browser.close();
}
})().catch((e) => { console.error(e); process.exit(1); });
