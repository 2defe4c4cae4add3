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
