// A real OpenID Provider for promote's OIDC tests: panva's oidc-provider (a certified
// implementation) on 127.0.0.1, with its development interactions (a login form that takes any
// password) and static clients and accounts. Run by tests/it/oidc.rs:
//
//   node provider.mjs PORT REDIRECT_URI
//
// It prints `ready ISSUER` on stdout once it listens. Clients:
//   promote / promote-secret: the server under test (authorization code with PKCE, client
//     credentials whose access tokens are JWTs for audience `promote`, with the CI bot's claims);
//   (its client credentials for resource urn:other:api are for audience `other`: not promote's).
// Accounts (the login typed in the form, which is also their `sub`):
//   id-alice: preferred_username alice, alice@example.com verified (the directory's alice);
//   id-impostor: preferred_username alice, another verified email;
//   id-unverified: preferred_username alice, alice's email, not verified;
//   id-bob: the directory's bob, who is disabled there;
//   id-carol: preferred_username carol (not in the directory), group release-managers.
//
// Test-only routes, outside the provider (never in a real IdP): GET /test/expired (a token this
// provider's key signed for `promote`, expired an hour ago) and GET /test/foreign (the same
// claims, unexpired, signed by a key that is not the provider's, under the provider's key id).

import http from 'node:http';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const [port, redirectUri] = process.argv.slice(2);
if (!port || !redirectUri) {
  console.error('usage: node provider.mjs PORT REDIRECT_URI');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const accounts = {
  'id-alice': { preferred_username: 'alice', name: 'Alice', email: 'alice@example.com', email_verified: true, groups: ['staff'] },
  'id-impostor': { preferred_username: 'alice', name: 'Not Alice', email: 'mallory@example.net', email_verified: true, groups: ['staff'] },
  'id-carol': { preferred_username: 'carol', name: 'Carol', email: 'carol@example.org', email_verified: true, groups: ['release-managers'] },
  'id-unverified': { preferred_username: 'alice', name: 'Alice?', email: 'alice@example.com', email_verified: false, groups: [] },
  'id-bob': { preferred_username: 'bob', name: 'Bob', email: 'bob@example.com', email_verified: true, groups: [] },
};

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signing = { ...(await jose.exportJWK(privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };
const { privateKey: foreignKey } = await jose.generateKeyPair('RS256', { extractable: true });

const scopes = ['openid', 'profile', 'email', 'groups'];
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'promote',
      client_secret: 'promote-secret',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'client_credentials'],
      response_types: ['code'],
    },
  ],
  jwks: { keys: [signing] },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes,
  // Every claim of the granted scopes in the ID token (as Keycloak and Dex do), not only at the
  // userinfo endpoint.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:promote:api',
      useGrantedResource: () => true,
      // urn:promote:api is promote's (audience `promote`); urn:other:api another service's.
      getResourceServerInfo: (ctx, indicator) => ({
        scope: 'api',
        audience: indicator === 'urn:other:api' ? 'other' : 'promote',
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // The CI job's client credentials token carries a name and groups, as an IdP's service account.
  extraTokenClaims: (ctx, token) => (token.kind === 'ClientCredentials' ? { preferred_username: 'ci-bot', groups: ['release-managers'] } : undefined),
  findAccount: (ctx, id) => {
    const a = accounts[id];
    if (!a) return undefined;
    return { accountId: id, claims: () => ({ sub: id, ...a }) };
  },
  // First-party: no consent screen (the grant is made at sign-in).
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(scopes.join(' '));
    grant.addOIDCClaims(['preferred_username', 'name', 'email', 'email_verified', 'groups']);
    await grant.save();
    return grant;
  },
  ttl: { ClientCredentials: 600, AccessToken: 600, IdToken: 600, Interaction: 600, Session: 600, Grant: 600, AuthorizationCode: 60 },
});

async function testToken(res, key, expiresIn) {
  const now = Math.floor(Date.now() / 1000);
  const jwt = await new jose.SignJWT({ preferred_username: 'alice', email: 'alice@example.com', email_verified: true })
    .setProtectedHeader({ alg: 'RS256', kid: signing.kid })
    .setIssuer(issuer)
    .setAudience('promote')
    .setSubject('id-alice')
    .setIssuedAt(now - 7200)
    .setExpirationTime(now + expiresIn)
    .sign(key);
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(jwt);
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url === '/test/expired') return void testToken(res, privateKey, -3600);
  if (req.url === '/test/foreign') return void testToken(res, foreignKey, 600);
  return callback(req, res);
});
server.listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
