// TWO_STEP end to end: the end user's fields go to POST /auth/two-step/:key as the frontend SDK
// sends them, the gateway trades them for a token at a real login endpoint on loopback, and the
// proxy sends that token (as a bearer token, or where a template puts it). A token nearing expiry
// is renewed by repeating the exchange with the stored fields, once for concurrent requests.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { databases } from '../support/db.mjs';
import { startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

function catalog(url) {
    return `
login-api:
    display_name: Login API
    categories: [other]
    auth_mode: TWO_STEP
    token_url: ${url}/tenants/\${connectionConfig.tenant}/login
    token_headers:
        x-client: latchkey-test
    token_params:
        email: \${credentials.email}
        password: \${credentials.password}
    token_response:
        token: data.access_token
        token_expiration: data.expires_in
        token_expiration_strategy: expireIn
    proxy:
        base_url: ${url}/api
        headers:
            authorization: Token \${accessToken}
    connection_config:
        tenant:
            type: string
            title: Tenant
            description: Your tenant
    credentials:
        email:
            type: string
            title: Email
            description: Your email
        password:
            type: string
            title: Password
            description: Your password
            secret: true
    docs: https://example.com/login
form-login-api:
    display_name: Form login API
    categories: [other]
    auth_mode: TWO_STEP
    token_url: ${url}/form-login
    body_format: form
    token_params:
        grant_type: password
        username: \${credentials.username}
    token_response:
        token: token
    token_expires_in_ms: 600000
    proxy:
        base_url: ${url}/api
    docs: https://example.com/login
renewing-login-api:
    display_name: Renewing login API
    categories: [other]
    auth_mode: TWO_STEP
    token_url: ${url}/renewing-login
    token_params:
        user: \${credentials.user}
        pass: \${credentials.pass}
    token_response:
        token: token
        token_expiration: expires_in
    token_expires_in_ms: 2000
    proxy:
        base_url: ${url}/api
    docs: https://example.com/login
rotating-login-api:
    display_name: Rotating login API
    categories: [other]
    auth_mode: TWO_STEP
    token_url: ${url}/rotating/login
    refresh_url: ${url}/rotating/refresh
    token_params:
        ClientId: \${credentials.clientId}
        Secret: \${credentials.secret}
    refresh_token_params:
        RefreshToken: \${refresh_token}
    token_response:
        token: Token
        refresh_token: RefreshToken
    token_expires_in_ms: 2000
    proxy:
        base_url: ${url}/api
    docs: https://example.com/login
`;
}

for (const db of databases()) {
    describe(`TWO_STEP credentials on ${db}`, () => {
        let upstream, gateway, nango, renewing, rotating;

        before(async () => {
            renewing = { calls: 0, longLived: false, refuse: false, delayMs: 0 };
            rotating = { logins: 0, refreshes: [], live: null, n: 0 };
            upstream = await startUpstream(async (req, res, body) => {
                const reply = (status, value) => {
                    res.writeHead(status, { 'content-type': 'application/json' });
                    res.end(JSON.stringify(value));
                };
                if (req.url === '/tenants/acme/login') {
                    const sent = JSON.parse(body.toString() || '{}');
                    const ok = sent.email === 'a@example.com' && sent.password === 'correct-horse-battery' && req.headers['x-client'] === 'latchkey-test';
                    return ok
                        ? reply(200, { data: { access_token: 'login-token', expires_in: 3600 } })
                        : reply(401, { message: 'Wrong email or password' });
                }
                if (req.url === '/form-login') {
                    const sent = new URLSearchParams(body.toString());
                    const ok = req.headers['content-type'] === 'application/x-www-form-urlencoded' && sent.get('grant_type') === 'password';
                    return ok ? reply(201, { token: `form-token-${sent.get('username')}` }) : reply(400, { error: 'bad form' });
                }
                if (req.url === '/renewing-login') {
                    const sent = JSON.parse(body.toString() || '{}');
                    const n = ++renewing.calls;
                    if (renewing.delayMs) await new Promise((r) => setTimeout(r, renewing.delayMs));
                    if (renewing.refuse || sent.user !== 'dana' || sent.pass !== 'renew-me-please') return reply(401, { message: 'Password expired' });
                    return reply(200, renewing.longLived ? { token: `renewed-${n}`, expires_in: 3600 } : { token: `renewed-${n}` });
                }
                if (req.url === '/rotating/login' || req.url === '/rotating/refresh') {
                    const sent = JSON.parse(body.toString() || '{}');
                    if (req.url === '/rotating/login') {
                        rotating.logins++;
                        if (sent.ClientId !== 'cid' || sent.Secret !== 'rotating-secret') return reply(401, { message: 'Unknown client' });
                    } else {
                        rotating.refreshes.push(sent.RefreshToken);
                        if (sent.RefreshToken !== rotating.live) return reply(401, { message: 'Unknown refresh token' });
                    }
                    const n = ++rotating.n;
                    rotating.live = `refresh-${n}`;
                    return reply(200, { Token: `rotated-${n}`, RefreshToken: rotating.live });
                }
                return reply(200, { authorization: req.headers.authorization ?? null, url: req.url });
            });
            gateway = await startGateway({
                db,
                config:
                    'catalogs: [two-step.yaml]\nintegrations:\n  login:\n    provider: login-api\n  form-login:\n    provider: form-login-api\n' +
                    '  renewing:\n    provider: renewing-login-api\n  rotating:\n    provider: rotating-login-api\n',
                files: { 'two-step.yaml': catalog(upstream.url) }
            });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        });

        after(async () => {
            await gateway?.stop();
            await upstream?.close();
        });

        const post = async (key, token, body, query = '') =>
            fetch(`${gateway.url}/auth/two-step/${key}?connect_session_token=${token}${query}`, {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify(body)
            });

        it('trades the fields for a token, stores them, and the proxy sends the token where the template says', async () => {
            const { data } = await nango.createConnectSession({ end_user: { id: 'u-2s' } });
            let res = await post('login', data.token, { type: 'TWO_STEP', email: 'a@example.com', password: 'wrong-horse' }, '&params[tenant]=acme');
            assert.equal(res.status, 400);
            let body = await res.json();
            assert.equal(body.error.code, 'connection_test_failed');
            assert.match(body.error.message, /Wrong email or password/);
            assert.ok(!body.error.message.includes('wrong-horse'), 'the password is not echoed');

            res = await post('login', data.token, { type: 'TWO_STEP', email: 'a@example.com' }, '&params[tenant]=acme');
            assert.equal(res.status, 400);
            assert.match((await res.json()).error.message, /Password is required/);

            res = await post('login', data.token, { type: 'TWO_STEP', email: 'a@example.com', password: 'correct-horse-battery' }, '&params[tenant]=acme');
            assert.equal(res.status, 200);
            const { connectionId } = await res.json();
            const connection = await nango.getConnection('login', connectionId);
            assert.equal(connection.credentials.type, 'TWO_STEP');
            assert.equal(connection.credentials.token, 'login-token');
            assert.equal(connection.credentials.email, 'a@example.com');
            const ttl = Date.parse(connection.credentials.expires_at) - Date.now();
            assert.ok(ttl > 3000_000 && ttl <= 3600_000, `expires in ${ttl} ms`);
            assert.equal(connection.end_user.id, 'u-2s');

            const proxied = await nango.get({ endpoint: '/me', providerConfigKey: 'login', connectionId });
            assert.equal(proxied.data.authorization, 'Token login-token');
            assert.ok(!gateway.output.includes('correct-horse-battery'), 'the password is not logged');
        });

        it('sends a form body when the entry says so, and a bearer token by default', async () => {
            const { data } = await nango.createConnectSession({ end_user: { id: 'u-form' } });
            const res = await post('form-login', data.token, { username: 'bob' });
            assert.equal(res.status, 200);
            const { connectionId } = await res.json();
            const connection = await nango.getConnection('form-login', connectionId);
            assert.equal(connection.credentials.token, 'form-token-bob');
            const ttl = Date.parse(connection.credentials.expires_at) - Date.now();
            assert.ok(ttl > 500_000 && ttl <= 600_000, 'token_expires_in_ms');
            const proxied = await nango.get({ endpoint: '/me', providerConfigKey: 'form-login', connectionId });
            assert.equal(proxied.data.authorization, 'Bearer form-token-bob');
        });

        it('renews a token nearing expiry with the stored fields, once for concurrent requests, and recovers from a refusal', async () => {
            const { data } = await nango.createConnectSession({ end_user: { id: 'u-renew' } });
            const res = await post('renewing', data.token, { type: 'TWO_STEP', user: 'dana', pass: 'renew-me-please' });
            assert.equal(res.status, 200);
            const { connectionId } = await res.json();
            assert.equal(renewing.calls, 1);

            // The first token (token_expires_in_ms: 2 s) is inside the refresh margin at once. The
            // next one lives an hour; the login endpoint is slow, so the requests overlap.
            renewing.longLived = true;
            renewing.delayMs = 1000;
            const proxied = await Promise.all(
                Array.from({ length: 20 }, () => nango.get({ endpoint: '/me', providerConfigKey: 'renewing', connectionId }).then((r) => r.data.authorization))
            );
            renewing.delayMs = 0;
            assert.deepEqual(new Set(proxied), new Set(['Bearer renewed-2']), 'every request carried the renewed token');
            assert.equal(renewing.calls, 2, 'exactly one renewal for the concurrent requests');
            const renewed = await nango.getConnection('renewing', connectionId);
            assert.equal(renewed.credentials.token, 'renewed-2');
            assert.equal(renewed.credentials.user, 'dana', 'the fields stay with the connection');
            assert.ok(Date.parse(renewed.credentials.expires_at) > Date.now() + 50 * 60_000);
            assert.equal((await nango.get({ endpoint: '/me', providerConfigKey: 'renewing', connectionId })).data.authorization, 'Bearer renewed-2');
            assert.equal(renewing.calls, 2, 'a fresh token is not renewed');

            // A refused renewal is reported as the provider said it; the next one recovers.
            renewing.refuse = true;
            let forced = await gateway.fetch(`/connections/${connectionId}?provider_config_key=renewing&force_refresh=true`);
            assert.equal(forced.status, 424);
            const body = await forced.json();
            assert.equal(body.error.code, 'invalid_credentials');
            assert.match(body.error.message, /HTTP 401: Password expired/);
            assert.ok(!body.error.message.includes('renew-me-please') && !gateway.output.includes('renew-me-please'), 'the password is neither echoed nor logged');
            renewing.refuse = false;
            forced = await gateway.fetch(`/connections/${connectionId}?provider_config_key=renewing&force_refresh=true`);
            assert.equal(forced.status, 200);
            assert.equal((await forced.json()).credentials.token, 'renewed-4');
            assert.equal((await nango.get({ endpoint: '/me', providerConfigKey: 'renewing', connectionId })).data.authorization, 'Bearer renewed-4');
        });

        it('renews with refresh_token_params at refresh_url when the entry has them', async () => {
            const { data } = await nango.createConnectSession({ end_user: { id: 'u-rotate' } });
            const res = await post('rotating', data.token, { type: 'TWO_STEP', clientId: 'cid', secret: 'rotating-secret' });
            assert.equal(res.status, 200);
            const { connectionId } = await res.json();
            // Each token lives 2 s, inside the refresh margin: every request renews it.
            for (const expected of ['Bearer rotated-2', 'Bearer rotated-3']) {
                const proxied = await nango.get({ endpoint: '/me', providerConfigKey: 'rotating', connectionId });
                assert.equal(proxied.data.authorization, expected);
            }
            assert.equal(rotating.logins, 1, 'renewals do not log in again');
            assert.deepEqual(rotating.refreshes, ['refresh-1', 'refresh-2'], 'each renewal sends the latest refresh token');
        });
    });
}
