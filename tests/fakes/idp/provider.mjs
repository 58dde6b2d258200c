// A real OpenID provider for signoff's tests: panva's certified oidc-provider, configured from a JSON file.
//
//   node provider.mjs CONFIG.json   ->  prints {"issuer": "..."} on one line once it listens on loopback
//
// CONFIG: {port, path, jwks, clients, users: {name: {password, groups}}, agents: {client_id: {extra claims}}}.
// Agents get JWT access tokens by client_credentials with a resource indicator (RFC 8707); people sign in on a
// small login page of its own (username and password), and consent is given on their behalf.
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const prefix = (config.path || '').replace(/\/$/, '');
const users = config.users || {};
const agents = config.agents || {};

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title></head>`
    + `<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function loginForm(uid, client, error) {
  return page('Test identity provider: sign in', `
    <p>Signing in to <strong>${escape(client)}</strong>.</p>
    ${error ? `<p role="alert">${escape(error)}</p>` : ''}
    <form method="post" action="${prefix}/interaction/${escape(uid)}/login">
      <label for="username">Username</label> <input id="username" name="username" autocomplete="username">
      <label for="password">Password</label> <input id="password" name="password" type="password">
      <button type="submit">Sign in</button>
    </form>`);
}

async function form(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

let provider;
let handle;

async function interaction(req, res, path) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (prompt.name === 'login') {
    if (req.method === 'POST' && path.endsWith('/login')) {
      const fields = await form(req);
      const username = fields.get('username') || '';
      const user = Object.hasOwn(users, username) ? users[username] : undefined;
      if (!user || user.password !== fields.get('password')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(loginForm(uid, params.client_id, 'Wrong username or password.'));
        return;
      }
      await provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginForm(uid, params.client_id));
    return;
  }
  // consent: granted for the test's first-party clients, for exactly what they asked
  const { accountId } = details.session;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

function configuration() {
  return {
    clients: config.clients,
    jwks: config.jwks,
    cookies: { keys: ['signoff-test-idp-cookie-key'] },
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
    scopes: ['openid', 'profile', 'groups', 'mcp'],
    findAccount(ctx, id) {
      if (!Object.hasOwn(users, id)) return undefined;
      const user = users[id];
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: user.username || id, name: user.name || id, groups: user.groups || [] };
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, resource) {
          if (!/^https?:\/\//.test(resource)) throw new errors.InvalidTarget();
          return { scope: 'mcp', accessTokenFormat: 'jwt', accessTokenTTL: 300 };
        },
      },
    },
    async extraTokenClaims(ctx, token) {
      return token.kind === 'ClientCredentials' ? agents[token.clientId] : undefined;
    },
    interactions: { url: (ctx, i) => `${prefix}/interaction/${i.uid}` },
    ttl: {
      AccessToken: 300, AuthorizationCode: 60, ClientCredentials: 300, IdToken: 300, Interaction: 600,
      Session: 3600, Grant: 3600,
    },
  };
}

const server = http.createServer((req, res) => {
  if (prefix) {
    if (req.url !== prefix && !req.url.startsWith(`${prefix}/`) && !req.url.startsWith(`${prefix}?`)) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"not_found"}');
      return;
    }
    // As Express mounts an app: the provider sees its own paths and finds the prefix in originalUrl.
    req.originalUrl = req.url;
    req.url = req.url.slice(prefix.length) || '/';
  }
  const path = req.url.split('?')[0];
  if (path.startsWith('/interaction/')) {
    interaction(req, res, path).catch((err) => {
      res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page('Sign-in failed', `<p>${escape(err.message)}</p>`));
    });
    return;
  }
  handle(req, res);
});

server.listen(config.port || 0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}${prefix}`;
  provider = new Provider(issuer, configuration());
  handle = provider.callback();
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.on('SIGTERM', () => process.exit(0)); // at once: open keep-alive connections must not hold it
