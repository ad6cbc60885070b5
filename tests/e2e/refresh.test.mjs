// Token refresh, end to end: a fake OAuth 2 token server of our own on loopback (it counts
// calls, rotates refresh tokens, refuses with invalid_grant, answers slowly or with broken JSON),
// an upstream API that only takes tokens that server issued, and the real gateway in front.
// Two gateway processes on one PostgreSQL database share one refresh per connection.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';

import { databases } from '../support/db.mjs';
import { startGateway } from '../support/gateway.mjs';
import { APP_FILES, APP_ID, validAppJwt } from '../support/github-app.mjs';
import { eventually, startReceiver } from '../support/webhooks.mjs';

const CLIENT_SECRET = 'refreshy-client-secret';

/** The token endpoint: `behave.set(refreshToken, 'invalid_grant' | 'malformed' | 'keep')`. */
async function startTokenServer() {
    const state = { calls: [], behave: new Map(), live: new Set(), issued: new Set(['still-valid']), delayMs: 0, count: 0 };
    const server = http.createServer(async (req, res) => {
        const chunks = [];
        for await (const chunk of req) chunks.push(chunk);
        const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
        state.calls.push({ path: req.url, form, contentType: req.headers['content-type'] });
        if (state.delayMs) await new Promise((r) => setTimeout(r, state.delayMs));
        const json = (status, body) => {
            res.writeHead(status, { 'content-type': 'application/json' });
            res.end(JSON.stringify(body));
        };
        const installation = req.url.match(/^\/app\/installations\/(\d+)\/access_tokens$/);
        if (installation) {
            if (!validAppJwt((req.headers.authorization || '').replace(/^Bearer /, ''))) return json(401, { message: 'A JSON web token could not be decoded' });
            if (installation[1] !== '777') return json(404, { message: 'Not Found' });
            const accessToken = `ghs-${++state.count}`;
            state.issued.add(accessToken);
            return json(201, { token: accessToken, expires_at: new Date(Date.now() + 3600_000).toISOString() });
        }
        if (form.grant_type === 'client_credentials') {
            if (form.client_id !== 'cc-id' || form.client_secret !== 'cc-secret') return json(401, { error: 'invalid_client' });
            const accessToken = `cc-${++state.count}`;
            state.issued.add(accessToken);
            return json(200, { access_token: accessToken, token_type: 'Bearer', expires_in: 3600, scope: form.scope });
        }
        if (form.client_id !== 'cid' || form.client_secret !== CLIENT_SECRET) return json(401, { error: 'invalid_client' });
        if (form.grant_type !== 'refresh_token') return json(400, { error: 'unsupported_grant_type' });
        const behaviour = state.behave.get(form.refresh_token) || 'rotate';
        if (behaviour === 'invalid_grant') return json(400, { error: 'invalid_grant', error_description: 'Refresh token revoked by the user' });
        if (behaviour === 'malformed') {
            res.writeHead(200, { 'content-type': 'application/json' });
            return res.end('{"access_token": "at-broken", ');
        }
        if (!state.live.has(form.refresh_token)) return json(400, { error: 'invalid_grant', error_description: 'unknown refresh token' });
        const n = ++state.count;
        const accessToken = `at-${n}`;
        state.issued.add(accessToken);
        const body = { access_token: accessToken, token_type: 'Bearer', expires_in: 3600, instance: { api_domain: `api-${n}.refreshy.test` }, granted: { region: 'eu' } };
        if (behaviour === 'rotate') {
            state.live.delete(form.refresh_token);
            state.live.add(`rt-${n}`);
            body.refresh_token = `rt-${n}`;
        }
        json(200, body);
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    state.url = `http://127.0.0.1:${server.address().port}`;
    state.refreshCalls = (refreshToken) => state.calls.filter((c) => c.form.refresh_token === refreshToken).length;
    state.close = () =>
        new Promise((resolve) => {
            server.closeAllConnections();
            server.close(resolve);
        });
    return state;
}

/** The provider's API: 200 for tokens the token server issued, 401 for anything else. */
async function startApi(tokens) {
    const server = http.createServer((req, res) => {
        const token = (req.headers.authorization || '').replace(/^Bearer /, '');
        const ok = tokens.issued.has(token);
        res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
        res.end(JSON.stringify(ok ? { token } : { error: 'invalid_token' }));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
        url: `http://127.0.0.1:${server.address().port}`,
        close: () =>
            new Promise((resolve) => {
                server.closeAllConnections();
                server.close(resolve);
            })
    };
}

function catalog(tokenUrl, apiUrl) {
    return `
refreshy:
    display_name: Refreshy
    categories: [other]
    auth_mode: OAUTH2
    authorization_url: ${tokenUrl}/authorize
    token_url: ${tokenUrl}/token
    token_response_metadata: [instance.api_domain]
    refresh_token_response_metadata: [granted.region]
    proxy:
        base_url: ${apiUrl}/api
    docs: https://example.com/refreshy
ccy:
    display_name: Client credentials
    categories: [other]
    auth_mode: OAUTH2_CC
    token_url: ${tokenUrl}/token
    proxy:
        base_url: ${apiUrl}/api
    docs: https://example.com/ccy
appy:
    display_name: Appy
    categories: [dev-tools]
    auth_mode: APP
    authorization_url: ${tokenUrl}/apps/appy/installations/new
    token_url: ${tokenUrl}/app/installations/\${connectionConfig.installation_id}/access_tokens
    proxy:
        base_url: ${apiUrl}/api
    docs: https://example.com/appy
`;
}

function gatewayOptions(tokens, api, receiver) {
    return {
        config: [
            'catalogs: [test-catalog.yaml]',
            'integrations:',
            '  refreshy:',
            '    provider: refreshy',
            '    client_id: cid',
            '    client_secret: ${env:REFRESHY_SECRET}',
            '  ccy:',
            '    provider: ccy',
            '    scopes: [read, write]',
            '  appy:',
            '    provider: appy',
            `    app_id: '${APP_ID}'`,
            '    private_key: ${file:app.pem}',
            'webhooks:',
            `  primary_url: ${receiver.url}/hooks`,
            ''
        ].join('\n'),
        files: { 'test-catalog.yaml': catalog(tokens.url, api.url), ...APP_FILES },
        // No background scan unless a test asks for one: it would race the requests under test.
        env: { REFRESHY_SECRET: CLIENT_SECRET, LATCHKEY_REFRESH_SCAN_INTERVAL: '3600' }
    };
}

async function importConnection(gateway, tokens, connectionId, { refreshToken, accessToken = 'expired-token', expiresInMs = -3600_000 }) {
    tokens.live.add(refreshToken);
    const res = await gateway.fetch('/connections', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
            provider_config_key: 'refreshy',
            connection_id: connectionId,
            credentials: {
                type: 'OAUTH2',
                access_token: accessToken,
                refresh_token: refreshToken,
                expires_at: new Date(Date.now() + expiresInMs).toISOString()
            }
        })
    });
    assert.equal(res.status, 201, await res.text());
}

function proxy(gateway, connectionId) {
    return fetch(`${gateway.url}/proxy/whoami`, {
        headers: { authorization: `Bearer ${gateway.secretKey}`, 'provider-config-key': 'refreshy', 'connection-id': connectionId }
    });
}

async function getConnection(gateway, connectionId, query = '') {
    const res = await gateway.fetch(`/connections/${connectionId}?provider_config_key=refreshy${query}`);
    return { status: res.status, body: await res.json() };
}

if (databases().includes('postgres')) {
    describe('refresh across two gateway nodes on PostgreSQL', () => {
        let tokens, api, receiver, nodeA, nodeB;

        before(async () => {
            tokens = await startTokenServer();
            api = await startApi(tokens);
            receiver = await startReceiver();
            nodeA = await startGateway({ db: 'postgres', ...gatewayOptions(tokens, api, receiver) });
            nodeB = await startGateway({
                db: { url: nodeA.databaseUrl },
                secretKey: nodeA.secretKey,
                encryptionKey: nodeA.encryptionKey,
                ...gatewayOptions(tokens, api, receiver)
            });
        });

        after(async () => {
            await nodeB?.stop();
            await nodeA?.stop();
            await receiver?.close();
            await api?.close();
            await tokens?.close();
        });

        it('100 concurrent proxy requests on an expired token make exactly one token call', async () => {
            await importConnection(nodeA, tokens, 'race', { refreshToken: 'rt-race' });
            tokens.delayMs = 1500;
            const responses = await Promise.all(
                Array.from({ length: 100 }, (_, i) => proxy(i % 2 === 0 ? nodeA : nodeB, 'race').then(async (r) => ({ status: r.status, body: await r.json() })))
            );
            tokens.delayMs = 0;
            const failures = responses.filter((r) => r.status !== 200);
            assert.deepEqual(failures, [], 'every request succeeds');
            assert.equal(tokens.refreshCalls('rt-race'), 1, 'exactly one call reached the token endpoint');
            const used = new Set(responses.map((r) => r.body.token));
            assert.equal(used.size, 1, 'all requests used the one new token');

            // Both nodes see the rotated refresh token.
            for (const node of [nodeA, nodeB]) {
                const { body } = await getConnection(node, 'race', '&refresh_token=true');
                assert.equal(body.credentials.access_token, [...used][0]);
                assert.match(body.credentials.refresh_token, /^rt-\d+$/);
                assert.ok(tokens.live.has(body.credentials.refresh_token), 'the stored refresh token is the live one');
            }
        });

        it('a forced refresh on one node is used by the other without a second call', async () => {
            await importConnection(nodeA, tokens, 'forced', { refreshToken: 'rt-forced', accessToken: 'still-valid', expiresInMs: 2 * 3600_000 });
            const before = tokens.calls.length;
            const forced = await getConnection(nodeA, 'forced', '&force_refresh=true');
            assert.equal(forced.status, 200);
            assert.notEqual(forced.body.credentials.access_token, 'still-valid');
            assert.equal(tokens.calls.length, before + 1);
            await eventually(async () => (await getConnection(nodeB, 'forced')).body.credentials.access_token === forced.body.credentials.access_token, {
                what: 'the other node to see the new token'
            });
            assert.equal((await proxy(nodeB, 'forced')).status, 200);
            assert.equal(tokens.calls.length, before + 1);
        });
    });
}

for (const db of databases()) {
    describe(`refresh on ${db}`, () => {
        let tokens, api, receiver, gateway;

        before(async () => {
            tokens = await startTokenServer();
            api = await startApi(tokens);
            receiver = await startReceiver();
            gateway = await startGateway({ db, ...gatewayOptions(tokens, api, receiver) });
        });

        after(async () => {
            await gateway?.stop();
            await receiver?.close();
            await api?.close();
            await tokens?.close();
        });

        it('refreshes before use only within the margin, and strips the refresh token unless asked', async () => {
            await importConnection(gateway, tokens, 'fresh', { refreshToken: 'rt-fresh', accessToken: 'still-valid', expiresInMs: 2 * 3600_000 });
            let r = await getConnection(gateway, 'fresh');
            assert.equal(r.status, 200);
            assert.equal(r.body.credentials.access_token, 'still-valid');
            assert.ok(!('refresh_token' in r.body.credentials));
            assert.equal(tokens.refreshCalls('rt-fresh'), 0);
            assert.equal((await proxy(gateway, 'fresh')).status, 200);
            assert.equal(tokens.refreshCalls('rt-fresh'), 0, 'a token good for two hours is not refreshed');

            await importConnection(gateway, tokens, 'soon', { refreshToken: 'rt-soon', accessToken: 'still-valid', expiresInMs: 10 * 60_000 });
            r = await getConnection(gateway, 'soon', '&refresh_token=true');
            assert.equal(tokens.refreshCalls('rt-soon'), 1, 'ten minutes left is inside the 15 minute margin');
            assert.match(r.body.credentials.access_token, /^at-\d+$/);
            assert.match(r.body.credentials.refresh_token, /^rt-\d+$/);
            assert.ok(Date.parse(r.body.credentials.expires_at) > Date.now() + 50 * 60_000);
        });

        it("copies the refresh response's metadata into the connection config", async () => {
            tokens.live.add('rt-meta');
            const res = await gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                    provider_config_key: 'refreshy',
                    connection_id: 'meta',
                    connection_config: { tenant: 't1', 'instance.api_domain': 'api-old.refreshy.test' },
                    credentials: { type: 'OAUTH2', access_token: 'expired-token', refresh_token: 'rt-meta', expires_at: new Date(Date.now() - 60_000).toISOString() }
                })
            });
            assert.equal(res.status, 201, await res.text());
            assert.equal((await proxy(gateway, 'meta')).status, 200);
            let { body } = await getConnection(gateway, 'meta');
            const n = body.credentials.access_token.replace('at-', '');
            assert.equal(body.connection_config['instance.api_domain'], `api-${n}.refreshy.test`, 'token_response_metadata');
            assert.equal(body.connection_config['granted.region'], 'eu', 'refresh_token_response_metadata');
            assert.equal(body.connection_config.tenant, 't1', 'the rest of the config is kept');

            ({ body } = await getConnection(gateway, 'meta', '&force_refresh=true'));
            const m = body.credentials.access_token.replace('at-', '');
            assert.notEqual(m, n);
            assert.equal(body.connection_config['instance.api_domain'], `api-${m}.refreshy.test`, 'each refresh brings its own');
        });

        it('a 401 from the provider refreshes once and retries with the new token', async () => {
            await importConnection(gateway, tokens, 'rejected', { refreshToken: 'rt-rejected', accessToken: 'rejected-token', expiresInMs: 2 * 3600_000 });
            const r = await proxy(gateway, 'rejected');
            assert.equal(r.status, 200, 'the retry with the refreshed token succeeds');
            const { token } = await r.json();
            assert.match(token, /^at-\d+$/);
            assert.equal(tokens.refreshCalls('rt-rejected'), 1, 'one refresh for the 401');
            const { body } = await getConnection(gateway, 'rejected');
            assert.equal(body.credentials.access_token, token, 'the new token is stored');
        });

        it('keeps the refresh token when the provider does not send a new one', async () => {
            tokens.behave.set('rt-keep', 'keep');
            await importConnection(gateway, tokens, 'keep', { refreshToken: 'rt-keep' });
            assert.equal((await proxy(gateway, 'keep')).status, 200);
            const { body } = await getConnection(gateway, 'keep', '&refresh_token=true');
            assert.equal(body.credentials.refresh_token, 'rt-keep');
            assert.match(body.credentials.access_token, /^at-\d+$/);
        });

        it('reports a refusal verbatim, backs off, sends a webhook, and recovers', async () => {
            tokens.behave.set('rt-revoked', 'invalid_grant');
            await importConnection(gateway, tokens, 'revoked', { refreshToken: 'rt-revoked' });
            let res = await proxy(gateway, 'revoked');
            assert.equal(res.status, 424);
            let body = await res.json();
            assert.equal(body.error.code, 'refresh_token_external_error');
            assert.match(body.error.message, /invalid_grant: Refresh token revoked by the user/);
            assert.equal(tokens.refreshCalls('rt-revoked'), 1);

            const failure = await eventually(() => receiver.about('revoked').find((h) => h.body.operation === 'refresh'), { what: 'the failure webhook' });
            assert.equal(failure.body.type, 'auth');
            assert.equal(failure.body.success, false);
            assert.equal(failure.body.providerConfigKey, 'refreshy');
            assert.equal(failure.body.error.type, 'token_refused');
            assert.match(failure.body.error.description, /invalid_grant/);

            // Backing off: no second call, the stored error is reported.
            res = await proxy(gateway, 'revoked');
            assert.equal(res.status, 424);
            body = await res.json();
            assert.equal(body.error.code, 'connection_refresh_backoff');
            assert.match(body.error.message, /Refresh token revoked by the user/);
            const viaApi = await getConnection(gateway, 'revoked');
            assert.equal(viaApi.status, 424);
            assert.equal(viaApi.body.error.code, 'invalid_credentials');
            assert.equal(viaApi.body.error.payload.connection.connection_id, 'revoked');
            assert.equal(tokens.refreshCalls('rt-revoked'), 1);

            // The provider takes it again; a forced refresh ends the failure streak.
            tokens.behave.delete('rt-revoked');
            const recovered = await getConnection(gateway, 'revoked', '&force_refresh=true');
            assert.equal(recovered.status, 200, JSON.stringify(recovered.body));
            assert.match(recovered.body.credentials.access_token, /^at-\d+$/);
            const recovery = await eventually(() => receiver.about('revoked').find((h) => h.body.operation === 'refresh' && h.body.success === true), {
                what: 'the recovery webhook'
            });
            assert.equal(recovery.body.error, undefined);
            assert.equal((await proxy(gateway, 'revoked')).status, 200);
            assert.equal(receiver.about('revoked').filter((h) => h.body.operation === 'refresh').length, 2, 'one failure and one recovery webhook');
        });

        it('keeps using a token that is still valid when its early refresh fails', async () => {
            tokens.behave.set('rt-early', 'invalid_grant');
            await importConnection(gateway, tokens, 'early', { refreshToken: 'rt-early', accessToken: 'still-valid', expiresInMs: 10 * 60_000 });
            const res = await proxy(gateway, 'early');
            assert.equal(res.status, 200);
            assert.equal((await res.json()).token, 'still-valid');
            assert.equal(tokens.refreshCalls('rt-early'), 1);
            const failure = await eventually(() => receiver.about('early').find((h) => h.body.operation === 'refresh'), { what: 'the failure webhook' });
            assert.equal(failure.body.success, false);
            // Asked for explicitly, the failure is the answer.
            const forced = await getConnection(gateway, 'early', '&force_refresh=true');
            assert.equal(forced.status, 424);
            assert.match(forced.body.error.message, /invalid_grant/);
        });

        it("renews client-credentials tokens with the connection's own client", async () => {
            const res = await gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                    provider_config_key: 'ccy',
                    connection_id: 'machine',
                    credentials: { type: 'OAUTH2_CC', token: 'expired-cc', client_id: 'cc-id', client_secret: 'cc-secret', expires_at: new Date(Date.now() - 60_000).toISOString() }
                })
            });
            assert.equal(res.status, 201, await res.text());
            const proxied = await fetch(`${gateway.url}/proxy/whoami`, {
                headers: { authorization: `Bearer ${gateway.secretKey}`, 'provider-config-key': 'ccy', 'connection-id': 'machine' }
            });
            assert.equal(proxied.status, 200);
            assert.match((await proxied.json()).token, /^cc-\d+$/);
            const call = tokens.calls.find((c) => c.form.grant_type === 'client_credentials');
            assert.equal(call.form.scope, 'read write');
            const { body } = await (async () => {
                const r = await gateway.fetch('/connections/machine?provider_config_key=ccy');
                return { body: await r.json() };
            })();
            assert.equal(body.credentials.type, 'OAUTH2_CC');
            assert.match(body.credentials.token, /^cc-\d+$/);
            assert.equal(body.credentials.client_id, 'cc-id');
            assert.ok(Date.parse(body.credentials.expires_at) > Date.now() + 50 * 60_000);
        });

        it('mints GitHub App installation tokens with the app key, and renews them', async () => {
            const importApp = (installationId) =>
                gateway.fetch('/connections', {
                    method: 'POST',
                    headers: { 'content-type': 'application/json' },
                    body: JSON.stringify({ provider_config_key: 'appy', connection_id: `install-${installationId}`, credentials: { type: 'APP', installation_id: installationId } })
                });
            let res = await importApp(777);
            assert.equal(res.status, 201);
            const created = await res.json();
            assert.equal(created.credentials.type, 'APP');
            assert.match(created.credentials.access_token, /^ghs-\d+$/);
            assert.equal(created.connection_config.installation_id, '777');
            assert.equal(created.connection_config.app_id, APP_ID);
            const proxied = await fetch(`${gateway.url}/proxy/whoami`, {
                headers: { authorization: `Bearer ${gateway.secretKey}`, 'provider-config-key': 'appy', 'connection-id': 'install-777' }
            });
            assert.equal(proxied.status, 200);
            assert.equal((await proxied.json()).token, created.credentials.access_token);
            const renewed = await (await gateway.fetch('/connections/install-777?provider_config_key=appy&force_refresh=true')).json();
            assert.match(renewed.credentials.access_token, /^ghs-\d+$/);
            assert.notEqual(renewed.credentials.access_token, created.credentials.access_token);

            res = await importApp(999);
            assert.equal(res.status, 400);
            const body = await res.json();
            assert.equal(body.error.code, 'connection_test_failed');
            assert.match(body.error.message, /HTTP 404\): Not Found/);
        });

        it('explains a malformed token response', async () => {
            tokens.behave.set('rt-broken', 'malformed');
            await importConnection(gateway, tokens, 'broken', { refreshToken: 'rt-broken' });
            const res = await proxy(gateway, 'broken');
            assert.equal(res.status, 424);
            const body = await res.json();
            assert.match(body.error.message, /token endpoint's answer is not usable/);
            assert.ok(!body.error.message.includes('rt-broken'), 'the refresh token is not echoed');
            assert.ok(!gateway.output.includes('rt-broken'), 'nor logged');
            assert.ok(!gateway.output.includes(CLIENT_SECRET), 'the client secret is never logged');
        });
    });
}

for (const db of databases()) {
    describe(`background refresh on ${db}`, () => {
        let tokens, api, receiver, gateway;

        before(async () => {
            tokens = await startTokenServer();
            api = await startApi(tokens);
            receiver = await startReceiver();
            const options = gatewayOptions(tokens, api, receiver);
            gateway = await startGateway({ db, ...options, env: { ...options.env, LATCHKEY_REFRESH_SCAN_INTERVAL: '1' } });
        });

        after(async () => {
            await gateway?.stop();
            await receiver?.close();
            await api?.close();
            await tokens?.close();
        });

        it('refreshes a connection nearing expiry without any request', async () => {
            // 17 minutes left: outside the 15 minute margin, so no request would refresh it yet,
            // but inside the scan's look-ahead.
            await importConnection(gateway, tokens, 'idle', { refreshToken: 'rt-idle', accessToken: 'still-valid', expiresInMs: 17 * 60_000 });
            await importConnection(gateway, tokens, 'later', { refreshToken: 'rt-later', accessToken: 'still-valid', expiresInMs: 3 * 3600_000 });
            // The token server counts the call before the gateway has stored its answer.
            await eventually(async () => /^at-\d+$/.test((await getConnection(gateway, 'idle')).body.credentials.access_token), {
                what: 'the background refresh'
            });
            assert.equal(tokens.refreshCalls('rt-idle'), 1);
            // A few more scans leave both alone: one is fresh now, the other is hours from expiry.
            await new Promise((r) => setTimeout(r, 3000));
            assert.equal(tokens.refreshCalls('rt-idle'), 1);
            assert.equal(tokens.refreshCalls('rt-later'), 0);
            assert.ok(tokens.calls.every((c) => c.form.refresh_token !== 'rt-later'));
        });
    });
}
