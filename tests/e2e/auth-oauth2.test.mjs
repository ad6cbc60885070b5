// The OAuth 2 authorization-code flow, end to end, as the frontend SDK drives it: WebSocket on
// `/` (connection_ack), the popup through /oauth/connect and the provider to /oauth/callback,
// the result pushed on the socket. Against a real OpenID Connect server (oidc-provider) and a
// misbehaving provider of our own.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { databases } from '../support/db.mjs';
import { freePort, startGateway } from '../support/gateway.mjs';
import { OIDC_CLIENT, OIDC_USER, openFrontendSocket, startFakeProvider, startOidcProvider, walkPopup } from '../support/oauth.mjs';

function catalog(issuer, fakeUrl) {
    return `
local-oidc:
    display_name: Local OIDC
    categories: [other]
    auth_mode: OAUTH2
    authorization_url: ${issuer}/auth
    token_url: ${issuer}/token
    authorization_params:
        prompt: consent
    proxy:
        base_url: ${issuer}
    docs: https://example.com/oidc
fake-cc:
    display_name: Fake client credentials
    categories: [other]
    auth_mode: OAUTH2_CC
    token_url: ${fakeUrl}/token
    proxy:
        base_url: ${fakeUrl}/api/cc
    docs: https://example.com/fake
fake-oauth:
    display_name: Fake OAuth
    categories: [other]
    auth_mode: OAUTH2
    authorization_url: ${fakeUrl}/authorize?tenant=\${connectionConfig.tenant}
    token_url: ${fakeUrl}/token
    disable_pkce: true
    scope_separator: ','
    authorization_params:
        audience: api
        access_type: offline
    authorization_url_replacements:
        client_id: app_id
    token_response_metadata:
        - instance.api_domain
    redirect_uri_metadata:
        - realm
    proxy:
        base_url: ${fakeUrl}/api/\${connectionConfig.tenant}
    connection_config:
        tenant:
            type: string
            title: Tenant
            description: Your tenant
    docs: https://example.com/fake
`;
}

for (const db of databases()) {
    describe(`OAuth 2 authorization code on ${db}`, () => {
        let oidc, fake, gateway, nango;

        before(async () => {
            const oidcPort = await freePort();
            fake = await startFakeProvider();
            gateway = await startGateway({
                db,
                config: `catalogs: [oauth-catalog.yaml]
integrations:
  oidc:
    provider: local-oidc
    client_id: ${OIDC_CLIENT.id}
    client_secret: \${env:OIDC_SECRET}
    scopes: [openid, offline_access, profile]
  fake:
    provider: fake-oauth
    client_id: fake-client
    client_secret: \${env:FAKE_SECRET}
    scopes: [read, write]
  no-client:
    provider: fake-oauth
  cc:
    provider: fake-cc
    scopes: [reports]
`,
                env: { OIDC_SECRET: OIDC_CLIENT.secret, FAKE_SECRET: 'fake-secret' },
                files: { 'oauth-catalog.yaml': catalog(`http://127.0.0.1:${oidcPort}`, fake.url) }
            });
            oidc = await startOidcProvider({ port: oidcPort, redirectUri: `${gateway.url}/oauth/callback` });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        });

        after(async () => {
            await gateway?.stop();
            await oidc?.close();
            await fake?.close();
        });

        const sessionToken = async (body = {}) =>
            (await nango.createConnectSession({ end_user: { id: 'u-oauth', email: 'o@example.com' }, ...body })).data.token;

        it('connects through a real OpenID Connect server with PKCE and proxies with the token', async () => {
            const token = await sessionToken({ allowed_integrations: ['oidc'] });
            const socket = await openFrontendSocket(gateway.url);
            const start = `${gateway.url}/oauth/connect/oidc?connect_session_token=${token}&ws_client_id=${socket.wsClientId}`;

            const first = await fetch(start, { redirect: 'manual' });
            assert.equal(first.status, 302);
            const authorize = new URL(first.headers.get('location'));
            assert.equal(authorize.origin + authorize.pathname, `${oidc.issuer}/auth`);
            assert.equal(authorize.searchParams.get('response_type'), 'code');
            assert.equal(authorize.searchParams.get('client_id'), OIDC_CLIENT.id);
            assert.equal(authorize.searchParams.get('redirect_uri'), `${gateway.url}/oauth/callback`);
            assert.equal(authorize.searchParams.get('scope'), 'openid offline_access profile');
            assert.equal(authorize.searchParams.get('code_challenge_method'), 'S256');
            assert.match(authorize.searchParams.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/);
            assert.match(authorize.searchParams.get('state'), /^[0-9a-f]{64}$/);
            assert.equal(authorize.searchParams.get('prompt'), 'consent');

            // That first state was never used; a second popup runs the whole flow.
            const socket2 = await openFrontendSocket(gateway.url);
            const end = await walkPopup(`${gateway.url}/oauth/connect/oidc?connect_session_token=${token}&ws_client_id=${socket2.wsClientId}`);
            assert.equal(end.status, 200, end.text);
            assert.match(end.text, /nango_oauth_callback_success/);
            const result = await socket2.next();
            assert.equal(result.message_type, 'success');
            assert.equal(result.provider_config_key, 'oidc');
            socket.close();
            socket2.close();

            const connection = await nango.getConnection('oidc', result.connection_id, false, true);
            assert.equal(connection.credentials.type, 'OAUTH2');
            assert.ok(connection.credentials.access_token);
            assert.ok(connection.credentials.refresh_token, 'offline_access gives a refresh token');
            assert.ok(Date.parse(connection.credentials.expires_at) > Date.now());
            assert.equal(connection.end_user.id, 'u-oauth');
            assert.equal(connection.tags.end_user_email, 'o@example.com');

            // The OIDC server's own userinfo endpoint accepts the token the proxy injects.
            const me = await nango.get({ endpoint: '/me', providerConfigKey: 'oidc', connectionId: result.connection_id });
            assert.equal(me.data.sub, OIDC_USER.login);
            assert.ok(!gateway.output.includes(connection.credentials.access_token), 'no token in the logs');
        });

        it('refuses a state that was already used', async () => {
            const token = await sessionToken();
            const first = await fetch(`${gateway.url}/oauth/connect/fake?connect_session_token=${token}&params[tenant]=t1`, {
                redirect: 'manual'
            });
            const toProvider = await fetch(first.headers.get('location'), { redirect: 'manual' });
            const callback = toProvider.headers.get('location');
            const once = await fetch(callback);
            assert.equal(once.status, 200);
            const twice = await fetch(callback);
            assert.equal(twice.status, 400);
            assert.match(await twice.text(), /already used|expired/);
            const forged = await fetch(`${gateway.url}/oauth/callback?state=${'a'.repeat(64)}&code=x`);
            assert.equal(forged.status, 400);
        });

        it('builds the authorization URL from the provider entry and stores metadata', async () => {
            const token = await sessionToken({
                integrations_config_defaults: { fake: { authorization_params: { access_type: 'online' } } }
            });
            const socket = await openFrontendSocket(gateway.url);
            const first = await fetch(
                `${gateway.url}/oauth/connect/fake?connect_session_token=${token}&ws_client_id=${socket.wsClientId}` +
                    `&params[tenant]=acme&authorization_params[audience]=undefined&authorization_params[extra]=1`,
                { redirect: 'manual' }
            );
            assert.equal(first.status, 302);
            const authorize = new URL(first.headers.get('location'));
            assert.equal(authorize.searchParams.get('tenant'), 'acme', '${connectionConfig.tenant} in the URL');
            assert.equal(authorize.searchParams.get('app_id'), 'fake-client', 'authorization_url_replacements');
            assert.equal(authorize.searchParams.get('client_id'), null);
            assert.equal(authorize.searchParams.get('scope'), 'read,write', 'the provider scope separator');
            assert.equal(authorize.searchParams.get('code_challenge'), null, 'disable_pkce');
            assert.equal(authorize.searchParams.get('audience'), null, '`undefined` removes a parameter');
            assert.equal(authorize.searchParams.get('extra'), '1');
            assert.equal(authorize.searchParams.get('access_type'), 'online', 'session defaults win');

            const end = await walkPopup(first.headers.get('location'));
            assert.equal(end.status, 200, end.text);
            const result = await socket.next();
            assert.equal(result.message_type, 'success');
            socket.close();
            const sent = fake.tokenRequests.at(-1);
            assert.equal(sent.body.get('grant_type'), 'authorization_code');
            assert.equal(sent.body.get('redirect_uri'), `${gateway.url}/oauth/callback`);
            assert.equal(sent.body.get('code_verifier'), null);

            const connection = await nango.getConnection('fake', result.connection_id);
            assert.equal(connection.connection_config.tenant, 'acme');
            assert.equal(connection.connection_config['instance.api_domain'], 'api.fake.test');
            assert.equal(connection.connection_config.realm, 'realm-42');
            const proxied = await nango.get({ endpoint: '/items', providerConfigKey: 'fake', connectionId: result.connection_id });
            assert.equal(proxied.data.url, '/api/acme/items');
            assert.equal(proxied.data.authorization, `Bearer ${connection.credentials.access_token}`);
        });

        /** Runs the fake provider's flow in `mode`; resolves to the popup's end page and the socket's message. */
        async function fakeFlow(mode) {
            fake.mode = mode;
            const token = await sessionToken();
            const socket = await openFrontendSocket(gateway.url);
            const end = await walkPopup(
                `${gateway.url}/oauth/connect/fake?connect_session_token=${token}&ws_client_id=${socket.wsClientId}&params[tenant]=t`
            );
            const message = await socket.next(60_000);
            socket.close();
            fake.mode = 'ok';
            return { end, message };
        }

        it('passes a denied consent to the user verbatim', async () => {
            const { end, message } = await fakeFlow('deny');
            assert.equal(end.status, 400);
            assert.match(end.text, /nango_oauth_callback_error/);
            assert.match(end.text, /access_denied: The user said no &lt;b&gt;thanks&lt;\/b&gt;/);
            assert.ok(!end.text.includes('<b>thanks'), 'provider text is escaped');
            assert.equal(message.message_type, 'error');
            assert.equal(message.error_desc, 'access_denied: The user said no <b>thanks</b>');
        });

        it('reports invalid_grant with the provider error, and logs neither code nor secret', async () => {
            const { end, message } = await fakeFlow('invalid_grant');
            assert.equal(end.status, 400);
            assert.equal(message.message_type, 'error');
            assert.match(message.error_desc, /invalid_grant/);
            assert.match(message.error_desc, /The code has expired \(fake\)/);
            const code = fake.tokenRequests.at(-1).body.get('code');
            assert.ok(!gateway.output.includes(code), 'the code is not logged');
            assert.ok(!gateway.output.includes('fake-secret'), 'the client secret is not logged');
        });

        it('waits for a slow token endpoint and rejects a malformed one', async () => {
            const slow = await fakeFlow('slow');
            assert.equal(slow.message.message_type, 'success', JSON.stringify(slow.message));
            const bad = await fakeFlow('malformed');
            assert.equal(bad.end.status, 400, bad.end.text);
            assert.equal(bad.message.message_type, 'error', JSON.stringify(bad.message));
            assert.match(bad.message.error_desc, /not usable|malformed|JSON/i);
        });

        it('gives up on a token endpoint that does not answer in time', async () => {
            fake.delayMs = 25_000;
            const { end, message } = await fakeFlow('slow');
            fake.delayMs = 1500;
            assert.equal(end.status, 400);
            assert.equal(message.error_type, 'token_endpoint_timeout');
            assert.match(message.error_desc, /did not answer within/);
        });

        it('creates OAUTH2_CC connections from the end user’s own client (POST /oauth2/auth)', async () => {
            const token = await sessionToken();
            const post = (body) =>
                fetch(`${gateway.url}/oauth2/auth/cc?connect_session_token=${token}`, {
                    method: 'POST',
                    headers: { 'content-type': 'application/json' },
                    body: JSON.stringify(body)
                });
            fake.mode = 'invalid_grant';
            let res = await post({ client_id: 'their-id', client_secret: 'their-secret' });
            fake.mode = 'ok';
            assert.equal(res.status, 400);
            let body = await res.json();
            assert.equal(body.error.code, 'connection_test_failed');
            assert.match(body.error.message, /invalid_grant/);

            res = await post({ client_id: 'their-id', client_secret: 'their-secret' });
            assert.equal(res.status, 200);
            body = await res.json();
            const sent = fake.tokenRequests.at(-1).body;
            assert.equal(sent.get('grant_type'), 'client_credentials');
            assert.equal(sent.get('client_id'), 'their-id');
            assert.equal(sent.get('scope'), 'reports');
            const connection = await nango.getConnection('cc', body.connectionId);
            assert.equal(connection.credentials.type, 'OAUTH2_CC');
            assert.equal(connection.credentials.client_id, 'their-id');
            assert.ok(Date.parse(connection.credentials.expires_at) > Date.now());
            const proxied = await nango.get({ endpoint: '/report', providerConfigKey: 'cc', connectionId: body.connectionId });
            assert.equal(proxied.data.authorization, `Bearer ${connection.credentials.token}`);
            assert.ok(!gateway.output.includes('their-secret'), 'the client secret is not logged');
        });

        it('answers configuration mistakes before the redirect', async () => {
            const token = await sessionToken();
            const socket = await openFrontendSocket(gateway.url);
            let res = await fetch(`${gateway.url}/oauth/connect/no-client?connect_session_token=${token}&ws_client_id=${socket.wsClientId}&params[tenant]=t`);
            assert.equal(res.status, 400);
            assert.match(await res.text(), /no OAuth client/);
            const message = await socket.next();
            assert.equal(message.error_type, 'provider_config_err');
            socket.close();
            res = await fetch(`${gateway.url}/oauth/connect/fake?connect_session_token=${token}`, { redirect: 'manual' });
            assert.equal(res.status, 400, 'the tenant is required');
            res = await fetch(`${gateway.url}/oauth/connect/fake`, { redirect: 'manual' });
            assert.equal(res.status, 401);
        });
    });
}

if (databases().includes('postgres')) {
    describe('OAuth results between two nodes on one PostgreSQL', () => {
        let fake, first, second;

        before(async () => {
            fake = await startFakeProvider();
            const files = { 'oauth-catalog.yaml': catalog('http://127.0.0.1:9', fake.url) };
            const config = `catalogs: [oauth-catalog.yaml]
integrations:
  fake:
    provider: fake-oauth
    client_id: fake-client
    client_secret: \${env:FAKE_SECRET}
`;
            const env = { FAKE_SECRET: 'fake-secret' };
            first = await startGateway({ db: 'postgres', config, files, env });
            second = await startGateway({
                db: { url: first.databaseUrl },
                config,
                files,
                env,
                secretKey: first.secretKey,
                encryptionKey: first.encryptionKey
            });
        });

        after(async () => {
            await second?.stop();
            await first?.stop();
            await fake?.close();
        });

        it('delivers the result to the node that holds the WebSocket', async () => {
            const nango = new Nango({ secretKey: first.secretKey, host: first.url });
            const token = (await nango.createConnectSession({ end_user: { id: 'u-nodes' } })).data.token;
            const socket = await openFrontendSocket(first.url);
            const end = await walkPopup(
                `${second.url}/oauth/connect/fake?connect_session_token=${token}&ws_client_id=${socket.wsClientId}&params[tenant]=t`
            );
            assert.equal(end.status, 200, end.text);
            const message = await socket.next(60_000);
            socket.close();
            assert.equal(message.message_type, 'success');
            const connection = await nango.getConnection('fake', message.connection_id);
            assert.equal(connection.end_user.id, 'u-nodes');
        });
    });
}
