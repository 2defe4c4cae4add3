// Signing in with a password, what a viewer is shown, and signing out, in Debian's headless
// Chromium. Called by the Rust test `ui::...` with: URL USER PASSWORD.
// Prints one JSON line with what it saw; any failed expectation throws (exit code 1).
"use strict";
const { launch } = require("./browser.cjs");

const [url, user, password, admin, adminPassword] = process.argv.slice(2);
(async () => {
const browser = await launch();
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
  // The edit pages show a viewer no edit or delete control, and the same forms posted anyway
  // with this session's CSRF token are refused.
  await page.goto(url + "/ui/endpoints/local");
  const endpointEditControls = await page.locator("form.edit, a.delete, button.test").count();
  await page.goto(url + "/ui/sources/gen");
  const sourceEditControls = await page.locator("form.edit, a.delete").count();
  await page.goto(url + "/ui/plans/nightly");
  const planEditControls = await page.locator("#edit, a.delete").count();
  await page.goto(url + "/ui/plans/nightly/edit");
  const planEditForms = await page.locator("form.edit").count();
  const confirmPage = (await page.goto(url + "/ui/plans/nightly/delete")).status();
  const forgedEdits = await page.evaluate(async ([csrf]) => {
    const out = {};
    for (const [path, body] of [
      ["/ui/sources/gen", "kind=command&url=cmd%3Ax&command=echo+forged"],
      ["/ui/sources/gen/delete", "confirm=gen"],
      ["/ui/plans/nightly/edit", "source=gen&endpoint=local&schedule=%40hourly&timezone=UTC&keep_last=1"],
      ["/ui/plans/nightly/delete", "confirm=nightly"],
      ["/ui/endpoints/local/delete", "confirm=local"],
    ]) {
      const r = await fetch(path, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "csrf=" + encodeURIComponent(csrf) + "&" + body,
        redirect: "manual",
      });
      out[path] = r.status;
    }
    return out;
  }, [csrf]);
  await page.goto(url + "/");
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
  // An admin makes a token on the Access page (shown once) and revokes it.
  const adm = await (await browser.newContext()).newPage();
  adm.on("dialog", (d) => d.accept());
  await adm.goto(url + "/ui/login");
  await adm.fill("#user", admin);
  await adm.fill("#password", adminPassword);
  await adm.click("button[type=submit]");
  await adm.waitForSelector("#plans");
  await adm.click("text=Access");
  await adm.waitForSelector("#users");
  const users = await adm.locator("#users tbody tr").count();
  await adm.fill("#token-name", "from-ui");
  await adm.selectOption("#token-role", "viewer");
  await adm.click("form[action='/ui/tokens'] button[type=submit]");
  const newToken = (await adm.textContent("#new-token code")).trim();
  const row = adm.locator("#tokens tr", { hasText: "from-ui" });
  await row.locator("button.delete").click();
  await adm.waitForSelector("#tokens");
  const leftAfterRevoke = await adm.locator("#tokens tr", { hasText: "from-ui" }).count();
  await adm.click("text=Audit");
  await adm.waitForSelector("#audit");
  const auditRows = await adm.locator("#audit tbody tr").count();
  console.log(JSON.stringify({
    wrong, runButtons, endpointForms, endpointTests, forced, afterSignOut,
    endpointEditControls, sourceEditControls, planEditControls, planEditForms, confirmPage,
    forgedEdits,
    httpOnly: session.httpOnly, sameSite: session.sameSite,
    users, newToken, leftAfterRevoke, auditRows,
  }));
} finally {
  await browser.close();
}
})().catch((e) => { console.error(e); process.exit(1); });
