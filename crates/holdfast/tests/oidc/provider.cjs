// A test OpenID provider for the OIDC sign-in tests: npm's oidc-provider 9 (panva's
// OpenID-certified provider), found through NODE_PATH (scripts/services installs it next to
// playwright-core; the tests pass HOLDFAST_TEST_NODE_PATH as NODE_PATH).
//
//   NODE_PATH=/var/lib/holdfast-test/ui/node_modules \
//     node provider.cjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
//
// - Issuer http://127.0.0.1:PORT (PORT 0: a free port, read the issuer from the ready line),
//   listening on 127.0.0.1 only, plain http (its cookies are not `secure` on http; no proxy
//   handling). Discovery: /.well-known/openid-configuration; endpoints /auth, /token, /me
//   (userinfo), /jwks, /session/end. No page it serves loads anything from elsewhere.
// - One static confidential client: CLIENT_ID/CLIENT_SECRET, registered as client_secret_basic;
//   oidc-provider 9 accepts client_secret_post from it as well (it treats the two alike). Grant
//   type authorization_code, response type code, exactly the one REDIRECT_URI. PKCE is required
//   for every authorization request, and S256 is the only method. Redirects to the client carry
//   code, state and iss (RFC 9207).
// - In-memory storage and an RS256 signing key (kid "test-rs256") made at start: nothing
//   survives a restart.
// - Scopes openid, profile (name, preferred_username), email (email, email_verified) and
//   groups (groups, an array of strings). The accounts below, by login name; `sub` is
//   "sub-" + the login name, so it differs from preferred_username on purpose.
// - Claims: the provider's standard behaviour (conformIdTokenClaims: scope claims come from
//   userinfo, not the ID token), plus groups in the ID token. So in the code flow the ID token
//   carries iss, sub, aud, exp, iat, nonce (when sent) and groups (only when the groups scope
//   was granted); name, preferred_username, email and email_verified are NOT in it. Userinfo
//   returns sub plus every claim of every granted scope, groups included.
// - Login page (GET /interaction/UID): a form with `input[name=login]` (#login),
//   `input[name=password]` (#password) and a submit button #sign-in "Sign in"; a second form
//   with button #cancel "Cancel" ends the request with error=access_denied at the redirect URI.
//   A known login name (exact, lower case) with any password signs in; any other name is
//   refused: the form comes back (HTTP 401) with `#login-error` "Unknown user". There is no
//   consent page: consent for what the client asked is granted automatically.
// - The provider keeps its own session per browser context (cookie _session): a second
//   authorization request in the same context signs in again without the form unless it asks
//   prompt=login (or max_age=0). Sign-out at /session/end asks first: button #logout-yes
//   "Yes, sign me out" (#logout-no "No, stay signed in").
// - Prints exactly one line on stdout, {"ready":true,"issuer":"http://127.0.0.1:PORT"}, once it
//   listens; everything else (the provider's notices too) goes to stderr. Exits when stdin
//   closes (so keep stdin a pipe: a parent that dies or drops the child ends it; </dev/null
//   ends it at once) and on SIGTERM/SIGINT/SIGHUP. On Node 20 the provider warns on stderr that
//   it wants Node 22 ("Unsupported runtime"): harmless here.
"use strict";
const http = require("node:http");
const crypto = require("node:crypto");
const { pathToFileURL } = require("node:url");

const ACCOUNTS = {
  alice: { name: "Alice Operator", email: "alice@example.org", groups: ["holdfast-operators"] },
  bob: { name: "Bob Admin", email: "bob@example.org", groups: ["holdfast-admins", "staff"] },
  carol: { name: "Carol Staff", email: "carol@example.org", groups: ["staff"] },
  dave: { name: "Dave Viewer", email: "dave@example.org", groups: ["holdfast-viewers"] },
};

const [portArg, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const port = Number(portArg);
if (!Number.isInteger(port) || port < 0 || port > 65535 ||
    !clientId || !clientSecret || !redirectUri) {
  console.error("usage: node provider.cjs PORT|0 CLIENT_ID CLIENT_SECRET REDIRECT_URI");
  process.exit(2);
}

// stdout is for the ready line only: the provider prints its notices with console.info.
const toStderr = (...args) => console.error(...args);
console.log = toStderr;
console.info = toStderr;
const stdout = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// Exit when the parent goes away (stdin closes) or asks (signals).
process.stdin.on("end", () => process.exit(0));
process.stdin.on("close", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, () => process.exit(0));

const esc = (s) => String(s).replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function page(res, status, title, body) {
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title>` +
    `</head><body><h1>${esc(title)}</h1>${body}</body></html>`;
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "content-length": Buffer.byteLength(html),
  });
  res.end(html);
}

function loginPage(res, uid, status, error, login) {
  page(res, status, "Sign in to the test provider",
    (error ? `<p id="login-error">${esc(error)}</p>` : "") +
    `<form method="post" action="/interaction/${esc(uid)}/login" id="login-form">` +
    `<label>Login <input type="text" name="login" id="login" value="${esc(login || "")}" ` +
    `autofocus></label> ` +
    `<label>Password <input type="password" name="password" id="password"></label> ` +
    `<button type="submit" id="sign-in">Sign in</button></form>` +
    `<form method="post" action="/interaction/${esc(uid)}/abort" id="cancel-form">` +
    `<button type="submit" id="cancel">Cancel</button></form>`);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let data = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => {
      data += chunk;
      if (data.length > 65536) reject(new Error("form too large"));
    });
    req.on("end", () => resolve(new URLSearchParams(data)));
    req.on("error", reject);
  });
}

async function main() {
  // oidc-provider is ESM only: resolve it through NODE_PATH (require.resolve honours it,
  // import() does not) and import the file by URL.
  const load = async (id) => import(pathToFileURL(require.resolve(id)).href);
  const { Provider, errors } = await load("oidc-provider");
  // The same in-memory adapter the provider uses by default, named so it does not warn.
  const { createMemoryAdapter } = await load("oidc-provider/lib/adapters/memory_adapter.js");

  const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: "jwk" }), kid: "test-rs256", alg: "RS256",
    use: "sig" };

  const inScope = (scope, name) => String(scope || "").split(" ").includes(name);
  const configuration = {
    adapter: createMemoryAdapter(15),
    jwks: { keys: [jwk] },
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    }],
    clientAuthMethods: ["client_secret_basic", "client_secret_post"],
    responseTypes: ["code"],
    pkce: { required: () => true },
    scopes: ["openid", "profile", "email", "groups"],
    // `groups` is listed under openid as well so that it may go into the ID token (whose claims
    // are masked to the openid scope's); claims() below only returns it when the groups scope
    // was granted, so the groups scope alone decides whether it appears anywhere.
    claims: {
      openid: ["sub", "groups"],
      profile: ["name", "preferred_username"],
      email: ["email", "email_verified"],
      groups: ["groups"],
    },
    async findAccount(ctx, id) {
      const login = id.startsWith("sub-") ? id.slice(4) : undefined;
      const account = login && Object.hasOwn(ACCOUNTS, login) ? ACCOUNTS[login] : undefined;
      if (!account) return undefined;
      return {
        accountId: id,
        async claims(use, scope) {
          const claims = {
            sub: id,
            preferred_username: login,
            name: account.name,
            email: account.email,
            email_verified: true,
          };
          if (inScope(scope, "groups")) claims.groups = [...account.groups];
          return claims;
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      // Its own pages: the default ones load a font from fonts.googleapis.com.
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.type = "html";
          ctx.body = `<!doctype html><html><head><meta charset="utf-8"><title>Sign out</title>` +
            `</head><body><h1>Sign out of the test provider?</h1>${form}` +
            `<button type="submit" form="op.logoutForm" name="logout" value="yes" ` +
            `id="logout-yes">Yes, sign me out</button> ` +
            `<button type="submit" form="op.logoutForm" id="logout-no">No, stay signed in` +
            `</button></body></html>`;
        },
        async postLogoutSuccessSource(ctx) {
          ctx.type = "html";
          ctx.body = `<!doctype html><html><head><meta charset="utf-8"><title>Signed out</title>` +
            `</head><body><h1 id="signed-out">Signed out</h1></body></html>`;
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ["holdfast-test-oidc-provider-cookie-key"] },
    ttl: {
      AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600,
      Session: 3600, Grant: 3600,
    },
    clientBasedCORS: () => false,
    async renderError(ctx, out, error) {
      console.error("oidc test provider: error page:", JSON.stringify(out), error?.message || "");
      ctx.type = "html";
      ctx.body = `<!doctype html><html><head><meta charset="utf-8"><title>Error</title></head>` +
        `<body><h1>Error</h1><pre id="oidc-error">${esc(out.error)}: ` +
        `${esc(out.error_description || "")}</pre></body></html>`;
    },
  };
  // Listen first, so that PORT 0 (a free port the system picks) works: the issuer needs the port.
  let handler = null;
  const server = http.createServer((req, res) => handler(req, res));
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  server.on("error", (err) => console.error("oidc test provider:", err.message));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  provider.on("server_error", (ctx, err) => console.error("oidc test provider: server_error", err));
  const handle = provider.callback();

  async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new errors.SessionNotFound("interaction mismatch");
    const { prompt, params } = details;
    if (req.method === "GET" && !action) {
      if (prompt.name === "login") return loginPage(res, uid, 200);
      if (prompt.name === "consent") {
        // Consent for everything the client asked, without a page.
        const grant = details.grantId
          ? await provider.Grant.find(details.grantId)
          : new provider.Grant({
            accountId: details.session.accountId, clientId: params.client_id,
          });
        const d = prompt.details;
        if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(" "));
        if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
        for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
          grant.addResourceScope(indicator, scopes.join(" "));
        }
        const grantId = await grant.save();
        const consent = details.grantId ? {} : { grantId };
        return provider.interactionFinished(req, res, { consent },
          { mergeWithLastSubmission: true });
      }
      return page(res, 400, "Unsupported prompt", `<p id="oidc-error">${esc(prompt.name)}</p>`);
    }
    if (req.method === "POST" && action === "login" && prompt.name === "login") {
      const form = await readForm(req);
      const login = (form.get("login") || "").trim();
      if (!Object.hasOwn(ACCOUNTS, login)) {
        console.error(`oidc test provider: refused login ${JSON.stringify(login)}`);
        return loginPage(res, uid, 401, "Unknown user", login);
      }
      console.error(`oidc test provider: signed in ${login}`);
      return provider.interactionFinished(req, res, { login: { accountId: "sub-" + login } },
        { mergeWithLastSubmission: false });
    }
    if (req.method === "POST" && action === "abort") {
      await readForm(req);
      return provider.interactionFinished(req, res,
        { error: "access_denied", error_description: "the user cancelled the sign-in" },
        { mergeWithLastSubmission: false });
    }
    return page(res, 405, "Not allowed", "");
  }

  handler = (req, res) => {
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?\/?(?:\?.*)?$/.exec(req.url);
    if (!m) return handle(req, res);
    interaction(req, res, m[1], m[2]).catch((err) => {
      console.error("oidc test provider: interaction failed:", err.message);
      if (!res.headersSent) {
        page(res, err.statusCode || 500, "Error",
          `<pre id="oidc-error">${esc(err.error || "server_error")}: ${esc(err.message)}</pre>`);
      } else {
        res.destroy();
      }
    });
  };
  stdout({ ready: true, issuer });
}

main().catch((err) => {
  console.error("oidc test provider: failed to start:", err);
  process.exit(1);
});
