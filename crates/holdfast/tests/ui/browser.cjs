// How every browser test starts Debian's Chromium (driven by playwright-core, found through
// NODE_PATH): headless, and without the background connections that this machine's closed
// network refuses.
"use strict";
const { chromium } = require("playwright-core");

exports.launch = () =>
  chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });

// A new tab signed in with an API token, on the page the sign-in leads to.
exports.signedIn = async (browser, url, token) => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url + "/ui/login");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#plans, main p");
  return page;
};
