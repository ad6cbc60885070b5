// Connect sessions and the credential endpoints (/api-auth/*), end to end: sessions made with
// @nangohq/node, credentials posted as the frontend SDK posts them, checked against a real
// upstream's verification endpoint, and the stored connection used through the proxy.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { Nango } from '@nangohq/node';

import { verifyingCatalog } from '../support/auth-catalog.mjs';
import { databases } from '../support/db.mjs';
import { BIN, REPO, startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

const config = (hooksUrl) => `catalogs: [auth-catalog.yaml]
webhooks:
  primary_url: ${hooksUrl}
integrations:
  apikey-prod:
    provider: verify-apikey
  basic-prod:
    provider: verify-basic
  open-prod:
    provider: open-api
  bill-prod:
    provider: bill
`;

/** The upstream: `/v1/workspaces/acme/me` accepts `Bearer good-key`, `/basic/check` accepts alice:secret. */
function provider(req, res, body) {
    const ok =
        (req.url === '/v1/workspaces/acme/me' && req.headers.authorization === 'Bearer good-key') ||
        (req.url === '/basic/check' &&
            req.method === 'POST' &&
            req.headers.authorization === `Basic ${Buffer.from('alice:secret').toString('base64')}` &&
            JSON.parse(body.toString() || '{}').ping === true) ||
        req.url.startsWith('/open/') ||
        (req.url.startsWith('/v1/') && req.headers.authorization === 'Bearer good-key');
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok, url: req.url, authorization: req.headers.authorization ?? null }));
}

for (const db of databases()) {
    describe(`connect sessions and credential flows on ${db}`, () => {
        let upstream, hooks, gateway, nango;

        before(async () => {
            upstream = await startUpstream(provider);
            hooks = await startUpstream();
            gateway = await startGateway({ db, config: config(`${hooks.url}/hooks`), files: { 'auth-catalog.yaml': verifyingCatalog(upstream.url) } });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        });

        after(async () => {
            await gateway?.stop();
            await upstream?.close();
            await hooks?.close();
        });

        const session = (body) =>
            nango.createConnectSession({
                end_user: { id: 'u-1', email: 'alice@example.com', display_name: 'Alice' },
                organization: { id: 'org-1', display_name: 'Acme' },
                ...body
            });

        /** POSTs credentials as @nangohq/frontend does. */
        const post = (path, token, body, extraQuery = '') =>
            fetch(`${gateway.url}${path}?connect_session_token=${token}${extraQuery}`, {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: body === undefined ? undefined : JSON.stringify(body)
            });

        it('creates sessions with Nango-shaped tokens that live 30 minutes', async () => {
            const before = Date.now();
            const { data } = await session({ allowed_integrations: ['apikey-prod'] });
            assert.match(data.token, /^nango_connect_session_[0-9a-f]{64}$/);
            const link = new URL(data.connect_link);
            assert.equal(link.searchParams.get('session_token'), data.token);
            assert.equal(`${link.origin}${link.pathname}`, `${gateway.url}/connect/`);
            const ttl = Date.parse(data.expires_at) - before;
            assert.ok(ttl > 29 * 60_000 && ttl <= 30 * 60_000 + 5_000, `expires in ${ttl} ms`);

            const res = await fetch(`${gateway.url}/connect/session`, { headers: { authorization: `Bearer ${data.token}` } });
            assert.equal(res.status, 200);
            const shown = (await res.json()).data;
            assert.equal(shown.endUser.id, 'u-1');
            assert.equal(shown.endUser.email, 'alice@example.com');
            assert.deepEqual(shown.endUser.organization, { id: 'org-1', display_name: 'Acme' });
            assert.deepEqual(shown.allowed_integrations, ['apikey-prod']);
            assert.equal(shown.websocketsPath, '/');
            assert.ok(shown.connectUISettings.theme.light.primary);
            assert.ok(!('isReconnecting' in shown));
        });

        it('lets a session list only its integrations and read providers', async () => {
            const { data } = await session({ allowed_integrations: ['apikey-prod'] });
            const auth = { authorization: `Bearer ${data.token}` };
            const list = await (await fetch(`${gateway.url}/integrations`, { headers: auth })).json();
            assert.deepEqual(list.data.map((i) => i.unique_key), ['apikey-prod']);
            const provider = await fetch(`${gateway.url}/providers/verify-apikey`, { headers: auth });
            assert.equal(provider.status, 200);
            assert.equal((await provider.json()).data.auth_mode, 'API_KEY');
            // A session cannot do what needs the secret key.
            assert.equal((await fetch(`${gateway.url}/connections`, { headers: auth })).status, 401);
        });

        it('rejects unknown integrations in a session body, naming the field', async () => {
            const res = await gateway.fetch('/connect/sessions', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ end_user: { id: 'u' }, allowed_integrations: ['apikey-prod', 'nope'] })
            });
            assert.equal(res.status, 400);
            const body = await res.json();
            assert.equal(body.error.code, 'invalid_body');
            assert.deepEqual(body.error.errors[0].path, ['allowed_integrations', 1]);
            const noUser = await gateway.fetch('/connect/sessions', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ allowed_integrations: ['apikey-prod'] })
            });
            assert.equal(noUser.status, 400);
        });

        it('refuses malformed, unknown and deleted session tokens', async () => {
            let res = await fetch(`${gateway.url}/connect/session`, { headers: { authorization: 'Bearer nango_connect_session_xyz' } });
            assert.equal(res.status, 401);
            assert.equal((await res.json()).error.code, 'invalid_connect_session_token_format');
            res = await fetch(`${gateway.url}/connect/session`, {
                headers: { authorization: `Bearer nango_connect_session_${'0'.repeat(64)}` }
            });
            assert.equal((await res.json()).error.code, 'unknown_connect_session_token');

            const { data } = await session({});
            res = await fetch(`${gateway.url}/connect/session`, { method: 'DELETE', headers: { authorization: `Bearer ${data.token}` } });
            assert.equal(res.status, 204);
            res = await fetch(`${gateway.url}/connect/session`, { headers: { authorization: `Bearer ${data.token}` } });
            assert.equal(res.status, 401);
            res = await post('/api-auth/api-key/apikey-prod', data.token, { apiKey: 'good-key' }, '&params[workspace]=acme');
            assert.equal(res.status, 401);
        });

        it('creates an API-key connection only when the provider accepts the key', async () => {
            const { data } = await session({ allowed_integrations: ['apikey-prod'], tags: { plan: 'pro' } });
            const seenBefore = upstream.requests.length;

            let res = await post('/api-auth/api-key/apikey-prod', data.token, { apiKey: 'bad-key' }, '&params[workspace]=acme');
            assert.equal(res.status, 400);
            let body = await res.json();
            assert.equal(body.error.code, 'connection_test_failed');
            assert.match(body.error.message, /401/);
            assert.ok(!body.error.message.includes('bad-key'), 'the key is not echoed');
            const check = upstream.requests[seenBefore];
            assert.equal(check.url, '/v1/workspaces/acme/me');
            assert.equal(check.headers.authorization, 'Bearer bad-key');
            assert.equal((await nango.listConnections()).connections.filter((c) => c.provider_config_key === 'apikey-prod').length, 0);

            res = await post('/api-auth/api-key/apikey-prod', data.token, { apiKey: 'good-key' }, '&params[workspace]=Not%20Valid');
            assert.equal(res.status, 400);
            assert.equal((await res.json()).error.code, 'invalid_connection_config');
            res = await post('/api-auth/api-key/apikey-prod', data.token, { apiKey: 'good-key' });
            assert.equal(res.status, 400);
            assert.match((await res.json()).error.message, /Workspace is required/);

            res = await post('/api-auth/api-key/apikey-prod', data.token, { apiKey: 'good-key' }, '&params[workspace]=acme');
            assert.equal(res.status, 200);
            body = await res.json();
            assert.equal(body.providerConfigKey, 'apikey-prod');
            assert.match(body.connectionId, /^[0-9a-f-]{36}$/);

            const connection = await nango.getConnection('apikey-prod', body.connectionId);
            assert.deepEqual(connection.credentials, { type: 'API_KEY', apiKey: 'good-key' });
            assert.equal(connection.connection_config.workspace, 'acme');
            assert.equal(connection.end_user.id, 'u-1');
            assert.equal(connection.end_user.organization.id, 'org-1');
            assert.equal(connection.tags.end_user_id, 'u-1');
            assert.equal(connection.tags.end_user_email, 'alice@example.com');
            assert.equal(connection.tags.organization_id, 'org-1');
            assert.equal(connection.tags.plan, 'pro');

            const proxied = await nango.get({ endpoint: '/things', providerConfigKey: 'apikey-prod', connectionId: body.connectionId });
            assert.equal(proxied.data.authorization, 'Bearer good-key');

            // The auth creation webhook, with the session's end user.
            const deadline = Date.now() + 60_000;
            let hook;
            while (!hook && Date.now() < deadline) {
                hook = hooks.requests.map((r) => JSON.parse(r.body)).find((p) => p.connectionId === body.connectionId);
                if (!hook) await new Promise((r) => setTimeout(r, 200));
            }
            assert.ok(hook, 'the auth webhook arrived');
            assert.equal(hook.type, 'auth');
            assert.equal(hook.operation, 'creation');
            assert.equal(hook.success, true);
            assert.equal(hook.authMode, 'API_KEY');
            assert.equal(hook.endUser.endUserId, 'u-1');
            assert.equal(hook.endUser.organizationId, 'org-1');
        });

        it('enforces the session: allowed integrations, no caller-chosen connection id, the auth mode', async () => {
            const { data } = await session({ allowed_integrations: ['apikey-prod'] });
            let res = await post('/api-auth/basic/basic-prod', data.token, { username: 'alice', password: 'secret' });
            assert.equal(res.status, 400);
            assert.equal((await res.json()).error.code, 'integration_not_allowed');
            res = await post('/api-auth/api-key/apikey-prod', data.token, { apiKey: 'good-key' }, '&params[workspace]=acme&connection_id=mine');
            assert.equal(res.status, 400);
            assert.equal((await res.json()).error.code, 'invalid_query_params');
            const open = await session({});
            res = await post('/api-auth/basic/apikey-prod', open.data.token, { username: 'a', password: 'b' });
            assert.equal((await res.json()).error.code, 'invalid_auth_mode');
            res = await post('/api-auth/api-key/nope', open.data.token, { apiKey: 'k' });
            assert.equal(res.status, 404);
            res = await fetch(`${gateway.url}/api-auth/api-key/apikey-prod`, { method: 'POST', body: '{"apiKey":"good-key"}', headers: { 'content-type': 'application/json' } });
            assert.equal(res.status, 401);
        });

        it('creates Basic connections verified by a POST, and NONE connections', async () => {
            const { data } = await session({ allowed_integrations: ['basic-prod', 'open-prod'] });
            let res = await post('/api-auth/basic/basic-prod', data.token, { username: 'alice', password: 'wrong' });
            assert.equal((await res.json()).error.code, 'connection_test_failed');
            res = await post('/api-auth/basic/basic-prod', data.token, { username: 'alice', password: 'secret' });
            assert.equal(res.status, 200);
            const { connectionId } = await res.json();
            const proxied = await nango.post({ endpoint: '/check', providerConfigKey: 'basic-prod', connectionId, data: { ping: true } });
            assert.equal(proxied.data.ok, true);

            res = await post('/auth/unauthenticated/open-prod', data.token, undefined);
            assert.equal(res.status, 200);
            const none = await res.json();
            const connection = await nango.getConnection('open-prod', none.connectionId);
            assert.deepEqual(connection.credentials, {});
        });

        it('refuses auth modes it does not run, clearly, and `latchkey check` warns about them', async () => {
            const { data } = await session({});
            let res = await post('/auth/bill/bill-prod', data.token, { username: 'u', password: 'p', organization_id: 'o', dev_key: 'k' });
            assert.equal(res.status, 400);
            let body = await res.json();
            assert.equal(body.error.code, 'unsupported_auth_mode');
            assert.match(body.error.message, /BILL/);
            res = await post('/api-auth/api-key/bill-prod', data.token, { apiKey: 'k' });
            assert.equal((await res.json()).error.code, 'unsupported_auth_mode');
            res = await post('/auth/tba/apikey-prod', data.token, { token_id: 'a', token_secret: 'b' });
            body = await res.json();
            assert.equal(body.error.code, 'invalid_auth_mode');
            assert.match(body.error.message, /API_KEY/);

            const { stdout } = await promisify(execFile)(BIN, [
                'check', '--config', path.join(gateway.dir, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers')
            ]);
            assert.match(stdout, /: ok/);
            assert.match(stdout, /warning: integration `bill-prod` uses provider `bill`, whose auth mode BILL/);
            assert.ok(!/apikey-prod/.test(stdout));
        });

        it('reconnect sessions replace the credentials of the bound connection', async () => {
            const first = await session({ allowed_integrations: ['apikey-prod'] });
            let res = await post('/api-auth/api-key/apikey-prod', first.data.token, { apiKey: 'good-key' }, '&params[workspace]=acme');
            const { connectionId } = await res.json();
            const before = await nango.getConnection('apikey-prod', connectionId);

            const reconnect = await nango.createReconnectSession({
                connection_id: connectionId,
                integration_id: 'apikey-prod',
                end_user: { id: 'u-1' }
            });
            const shown = await (
                await fetch(`${gateway.url}/connect/session`, { headers: { authorization: `Bearer ${reconnect.data.token}` } })
            ).json();
            assert.equal(shown.data.isReconnecting, true);
            assert.deepEqual(shown.data.allowed_integrations, ['apikey-prod']);

            res = await post('/api-auth/api-key/apikey-prod', reconnect.data.token, { apiKey: 'good-key' }, '&params[workspace]=acme');
            assert.equal(res.status, 200);
            assert.equal((await res.json()).connectionId, connectionId);
            const connection = await nango.getConnection('apikey-prod', connectionId);
            assert.equal(connection.created_at, before.created_at, 'the same connection, its credentials replaced');
            assert.equal(connection.connection_config.workspace, 'acme');

            await assert.rejects(
                nango.createReconnectSession({ connection_id: 'nope', integration_id: 'apikey-prod', end_user: { id: 'u' } }),
                (e) => e.response?.status === 400
            );
        });
    });
}
