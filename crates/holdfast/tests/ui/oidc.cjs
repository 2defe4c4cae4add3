// Signing in through an OpenID provider (tests/oidc/provider.cjs, npm's oidc-provider) in
// Debian's headless Chromium. Called by the Rust test `oidc::...` with: URL.
// Each sign-in runs in a browser context of its own (the provider keeps a session per
// browser). Prints one JSON line with what it saw; any failed expectation throws (exit 1).
"use strict";
const { launch } = require("./browser.cjs");

const [url] = process.argv.slice(2);
(async () => {
const browser = await launch();
const seen = {};
// Holdfast's sign-in page → the provider's form → back: what the browser ends on.
const signIn = async (login) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url + "/ui/login");
  await page.click("#oidc-sign-in");
  await page.waitForSelector("input[name=login]");
  await page.fill("input[name=login]", login);
  await page.fill("input[name=password]", "any password: the provider knows its accounts");
  await page.click("#sign-in");
  await page.waitForSelector("#who, #login-error");
  return { context, page };
};
try {
  {
    const { context, page } = await signIn("alice");
    seen.alice = await page.textContent("#who");
    seen.aliceUrl = new URL(page.url()).pathname;
    // An operator: the dashboard, and the endpoints page with its edit forms.
    await page.goto(url + "/ui/endpoints");
    seen.aliceEndpointForms = await page.locator("form.edit").count();
    await page.goto(url + "/ui/access");
    seen.aliceAccess = await page.textContent("main");
    const cookies = await context.cookies();
    const s = cookies.find((c) => c.name === "holdfast_session");
    seen.sessionSameSite = s && s.sameSite;
    seen.pendingLeft = cookies.some((c) => c.name === "holdfast_oidc");
    await context.close();
  }
  {
    const { context, page } = await signIn("bob");
    seen.bob = await page.textContent("#who");
    await context.close();
  }
  {
    const { context, page } = await signIn("carol");
    seen.carol = await page.textContent("#login-error");
    seen.carolStatusPage = new URL(page.url()).pathname;
    // Nothing signed in: the dashboard sends carol back to the sign-in page.
    await page.goto(url + "/");
    seen.carolAfter = new URL(page.url()).pathname;
    await context.close();
  }
  {
    const { context, page } = await signIn("dave");
    seen.dave = await page.textContent("#login-error");
    await context.close();
  }
  {
    // A callback nobody started here (no sealed cookie), and one with another state.
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(url + "/ui/oidc/callback?code=forged&state=forged");
    seen.forged = await page.textContent("#login-error");
    await page.goto(url + "/ui/login");
    await page.click("#oidc-sign-in");
    await page.waitForSelector("input[name=login]");
    await page.goto(url + "/ui/oidc/callback?code=forged&state=not-the-one-sent");
    seen.wrongState = await page.textContent("#login-error");
    // A provider's refusal comes back as an error with the same state: the Cancel button.
    await page.goto(url + "/ui/login");
    await page.click("#oidc-sign-in");
    await page.waitForSelector("#cancel");
    await page.click("#cancel");
    await page.waitForSelector("#login-error");
    seen.cancelled = await page.textContent("#login-error");
    await context.close();
  }
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
})().catch((e) => { console.error(e); process.exit(1); });
