// A real OpenID provider for the console tests: `oidc-provider` (OpenID Certified) on
// a loopback port, with one confidential test client and users carrying `groups`.
// Usage: node provider.mjs PORT REDIRECT_URI[,REDIRECT_URI…] CLIENT_SECRET
// Prints `ready <issuer>` once it listens. Any password is accepted (the provider's
// development login page); the login names the account.
import http from 'node:http';
import Provider from 'oidc-provider';

const [port, redirectUri, clientSecret] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const users = {
  alice: { name: 'Alice Admin', email: 'alice@example.test', groups: ['staff', 'usher-admins'] },
  olivia: { name: 'Olivia Owner', email: 'olivia@example.test', groups: ['usher-owners'] },
  aud: { name: 'Audrey Auditor', email: 'aud@example.test', groups: ['usher-auditors'] },
  eve: { name: 'Eve Nobody', email: 'eve@example.test', groups: ['staff'] },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'usher-console',
    client_secret: clientSecret,
    redirect_uris: redirectUri.split(','),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Like an IdP configured to put groups in the ID token (Entra, Okta).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  cookies: { keys: ['usher-test-cookie-key-0123456789'] },
  async findAccount(ctx, sub) {
    const u = users[sub];
    if (!u) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, preferred_username: sub, email_verified: true, ...u };
      },
    };
  },
  // The test client is trusted: no consent page.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = http.createServer(provider.callback());
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
