// The foundation, end to end through the official @nangohq/node client: integrations,
// connections, metadata and the credential-injecting proxy, on SQLite and on PostgreSQL.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { loopbackCatalog } from '../support/catalog.mjs';
import { databases } from '../support/db.mjs';
import { rawRequest, startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

/** The status of a failed SDK call (axios error), or a failure when the call succeeded. */
async function statusOf(promise) {
    try {
        await promise;
    } catch (e) {
        return { status: e.response?.status, body: e.response?.data };
    }
    assert.fail('expected the call to fail');
}

for (const db of databases()) {
    describe(`foundation on ${db}`, () => {
        let upstream, gateway, nango;

        before(async () => {
            upstream = await startUpstream();
            gateway = await startGateway({
                db,
                config: 'catalogs: [test-catalog.yaml]\nintegrations:\n  declared-acme:\n    provider: acme-apikey\n',
                files: { 'test-catalog.yaml': loopbackCatalog(upstream.url) }
            });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        });

        after(async () => {
            await gateway?.stop();
            await upstream?.close();
        });

        it('creates, reads, updates and lists integrations', async () => {
            const created = await nango.createIntegration({
                provider: 'acme-oauth',
                unique_key: 'acme-oauth-prod',
                display_name: 'Acme production',
                credentials: { type: 'OAUTH2', client_id: 'cid', client_secret: 'csecret', scopes: 'read,write' }
            });
            assert.equal(created.data.unique_key, 'acme-oauth-prod');
            assert.equal(created.data.provider, 'acme-oauth');
            assert.equal(created.data.display_name, 'Acme production');
            assert.ok(!('credentials' in created.data), 'credentials are only returned when asked for');

            const withCredentials = await nango.getIntegration({ uniqueKey: 'acme-oauth-prod' }, { include: ['credentials'] });
            assert.deepEqual(withCredentials.data.credentials, {
                type: 'OAUTH2',
                client_id: 'cid',
                client_secret: 'csecret',
                scopes: 'read,write',
                webhook_secret: null
            });

            const updated = await nango.updateIntegration({ uniqueKey: 'acme-oauth-prod' }, { display_name: 'Acme prod' });
            assert.equal(updated.data.display_name, 'Acme prod');

            const { configs } = await nango.listIntegrations();
            const keys = configs.map((c) => c.unique_key);
            assert.ok(keys.includes('acme-oauth-prod'));
            assert.ok(keys.includes('declared-acme'), 'integrations of nango.yaml are listed too');
        });

        it('refuses to change integrations declared in nango.yaml, naming the file', async () => {
            const { status, body } = await statusOf(nango.updateIntegration({ uniqueKey: 'declared-acme' }, { display_name: 'x' }));
            assert.equal(status, 409);
            assert.match(body.error.message, /nango\.yaml/);
            assert.equal((await statusOf(nango.deleteIntegration('declared-acme'))).status, 409);
        });

        it('rejects bad integration bodies with the field named, storing nothing', async () => {
            let r = await statusOf(nango.createIntegration({ provider: 'no-such-provider', unique_key: 'x1' }));
            assert.equal(r.status, 400);
            assert.deepEqual(r.body.error.errors[0].path, ['provider']);
            r = await statusOf(nango.createIntegration({ provider: 'acme-apikey', unique_key: 'x2', colour: 'red' }));
            assert.equal(r.status, 400);
            assert.deepEqual(r.body.error.errors[0].path, ['colour']);
            r = await statusOf(nango.createIntegration({ provider: 'acme-apikey' }));
            assert.equal(r.status, 400);
            assert.deepEqual(r.body.error.errors[0].path, ['unique_key']);
            r = await statusOf(nango.createIntegration({ provider: 'acme-apikey', unique_key: 'acme-oauth-prod' }));
            assert.equal(r.status, 400, 'a duplicate key is refused');

            const raw = await gateway.fetch('/integrations', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"provider":' });
            assert.equal(raw.status, 400);
            assert.equal((await raw.json()).error.code, 'invalid_json');

            const big = await gateway.fetch('/integrations', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ provider: 'acme-apikey', unique_key: 'big', custom: { blob: 'x'.repeat(5 * 1024 * 1024) } })
            });
            assert.equal(big.status, 400);
            assert.match((await big.json()).error.message, /larger than the limit/);

            const { configs } = await nango.listIntegrations();
            for (const key of ['x1', 'x2', 'big']) assert.ok(!configs.some((c) => c.unique_key === key), `${key} was stored`);
        });

        it('imports an API-key connection and proxies with the injected key', async () => {
            const imported = await gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                    provider_config_key: 'declared-acme',
                    connection_id: 'user-1',
                    credentials: { type: 'API_KEY', apiKey: 'sk-live-123' },
                    end_user: { id: 'u1', email: 'ann@example.com', display_name: 'Ann' },
                    tags: { plan: 'pro' },
                    connection_config: { region: 'eu' }
                })
            });
            assert.equal(imported.status, 201, await imported.clone().text());

            const connection = await nango.getConnection('declared-acme', 'user-1');
            assert.deepEqual(connection.credentials, { type: 'API_KEY', apiKey: 'sk-live-123' });
            assert.equal(connection.end_user.email, 'ann@example.com');
            assert.equal(connection.tags.end_user_id, 'u1');
            assert.equal(connection.tags.plan, 'pro');
            assert.ok(connection.last_fetched_at);

            upstream.requests.length = 0;
            const res = await nango.get({
                providerConfigKey: 'declared-acme',
                connectionId: 'user-1',
                endpoint: '/widgets?colour=blue',
                headers: { 'X-Trace': 'abc' }
            });
            assert.equal(res.status, 200);
            assert.equal(res.headers['x-upstream'], 'echo', 'upstream headers come back unchanged');
            const seen = upstream.requests.at(-1);
            assert.equal(seen.method, 'GET');
            assert.equal(seen.url, '/api/v1/widgets?colour=blue&key=sk-live-123');
            assert.equal(seen.headers['x-api-key'], 'sk-live-123');
            assert.equal(seen.headers['x-acme-region'], 'eu');
            assert.equal(seen.headers['x-trace'], 'abc', 'Nango-Proxy-* headers are forwarded without the prefix');
            assert.equal(seen.headers.authorization, undefined, "the caller's secret key never goes upstream");
            assert.equal(seen.headers['connection-id'], undefined);
        });

        it('imports an OAuth 2 connection; the refresh token is shown only when asked for', async () => {
            const expires = new Date(Date.now() + 3600_000).toISOString();
            const imported = await gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                    provider_config_key: 'acme-oauth-prod',
                    connection_id: 'user-2',
                    credentials: { type: 'OAUTH2', access_token: 'at-1', refresh_token: 'rt-1', expires_at: expires },
                    connection_config: { tenant: 't42' }
                })
            });
            assert.equal(imported.status, 201, await imported.clone().text());

            const hidden = await nango.getConnection('acme-oauth-prod', 'user-2');
            assert.equal(hidden.credentials.access_token, 'at-1');
            assert.equal(hidden.credentials.refresh_token, undefined);
            assert.equal(hidden.credentials.expires_at, expires);
            const shown = await nango.getConnection('acme-oauth-prod', 'user-2', false, true);
            assert.equal(shown.credentials.refresh_token, 'rt-1');
            assert.equal(await nango.getToken('acme-oauth-prod', 'user-2'), 'at-1');

            upstream.requests.length = 0;
            const res = await nango.post({
                providerConfigKey: 'acme-oauth-prod',
                connectionId: 'user-2',
                endpoint: 'items',
                data: { name: 'first' },
                headers: { 'User-Agent': 'caller-agent' }
            });
            assert.equal(res.status, 200);
            const seen = upstream.requests.at(-1);
            assert.equal(seen.url, '/tenants/t42/items');
            assert.equal(seen.headers.authorization, 'Bearer at-1');
            assert.equal(seen.headers['user-agent'], 'acme-client', "the provider's user-agent wins");
            assert.deepEqual(JSON.parse(seen.body), { name: 'first' });
            assert.match(seen.headers['content-type'], /application\/json/);
        });

        it('imports a Basic connection and uses the fallback base URL', async () => {
            await nango.createIntegration({ provider: 'acme-basic', unique_key: 'acme-basic' });
            const imported = await gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                    provider_config_key: 'acme-basic',
                    connection_id: 'user-3',
                    credentials: { type: 'BASIC', username: 'ann', password: 'p@ss:word' }
                })
            });
            assert.equal(imported.status, 201);
            upstream.requests.length = 0;
            await nango.get({ providerConfigKey: 'acme-basic', connectionId: 'user-3', endpoint: '/me' });
            const seen = upstream.requests.at(-1);
            assert.equal(seen.url, '/basic-default/me');
            assert.equal(seen.headers.authorization, `Basic ${Buffer.from('ann:p@ss:word').toString('base64')}`);
        });

        it('passes upstream errors and bodies through unchanged', async () => {
            const failing = await startUpstream((req, res) => {
                res.writeHead(418, { 'content-type': 'text/plain', 'x-reason': 'teapot' });
                res.end('short and stout');
            });
            try {
                const r = await gateway.fetch('/proxy/anything', {
                    headers: { 'provider-config-key': 'declared-acme', 'connection-id': 'user-1', 'base-url-override': failing.url }
                });
                assert.equal(r.status, 400, 'a foreign Base-Url-Override is refused unless the integration allows it');
                assert.equal((await r.json()).error.code, 'base_url_override_not_allowed');

                await nango.createIntegration({ provider: 'acme-apikey', unique_key: 'acme-open', allow_base_url_override: true });
                await gateway.fetch('/connections', {
                    method: 'POST',
                    headers: { 'content-type': 'application/json' },
                    body: JSON.stringify({ provider_config_key: 'acme-open', connection_id: 'c', credentials: { type: 'API_KEY', apiKey: 'k' } })
                });
                const passed = await gateway.fetch('/proxy/anything', {
                    headers: { 'provider-config-key': 'acme-open', 'connection-id': 'c', 'base-url-override': failing.url }
                });
                assert.equal(passed.status, 418);
                assert.equal(passed.headers.get('x-reason'), 'teapot');
                assert.equal(await passed.text(), 'short and stout');
            } finally {
                await failing.close();
            }
        });

        it('streams a large body both ways', async () => {
            const size = 8 * 1024 * 1024;
            const sink = await startUpstream((req, res, body) => {
                res.writeHead(200, { 'content-type': 'application/octet-stream' });
                res.end(Buffer.alloc(size, body.length % 251));
            });
            try {
                await nango.updateIntegration({ uniqueKey: 'acme-open' }, {});
                const payload = Buffer.alloc(size, 7);
                const r = await gateway.fetch('/proxy/upload', {
                    method: 'PUT',
                    headers: {
                        'provider-config-key': 'acme-open',
                        'connection-id': 'c',
                        'base-url-override': sink.url,
                        'content-type': 'application/octet-stream'
                    },
                    body: payload
                });
                assert.equal(r.status, 200);
                const back = Buffer.from(await r.arrayBuffer());
                assert.equal(back.length, size);
                assert.equal(back[0], size % 251);
                assert.equal(sink.requests[0].body.length, size);
            } finally {
                await sink.close();
            }
        });

        it('refuses paths that try to leave the provider host', async () => {
            for (const path of ['//evil.example/x', '/%2F%2Fevil.example', '/@evil.example', '/%40evil.example', '/..%2F..%2Fadmin', '/%2e%2e/admin', '/a/%252e%252e/%252e%252e/admin']) {
                const r = await rawRequest(gateway, `/proxy${path}`, { headers: { 'provider-config-key': 'declared-acme', 'connection-id': 'user-1' } });
                assert.equal(r.status, 400, `${path} was not refused: ${r.body}`);
                assert.equal(JSON.parse(r.body).error.code, 'invalid_proxy_path');
            }
        });

        it('reports missing connection config instead of sending ${…} upstream', async () => {
            await gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                    provider_config_key: 'acme-oauth-prod',
                    connection_id: 'no-tenant',
                    credentials: { type: 'OAUTH2', access_token: 'x' }
                })
            });
            upstream.requests.length = 0;
            const { status, body } = await statusOf(nango.get({ providerConfigKey: 'acme-oauth-prod', connectionId: 'no-tenant', endpoint: '/x' }));
            assert.equal(status, 400);
            assert.match(body.error.message, /connection config `tenant`/);
            assert.equal(upstream.requests.length, 0, 'nothing reached the upstream');
        });

        it('answers proxy errors in the error envelope', async () => {
            let r = await gateway.fetch('/proxy/x', { headers: { 'provider-config-key': 'declared-acme' } });
            assert.equal(r.status, 400);
            assert.equal((await r.json()).error.code, 'invalid_headers');
            r = await gateway.fetch('/proxy/x', { headers: { 'provider-config-key': 'nope', 'connection-id': 'a' } });
            assert.equal(r.status, 404);
            assert.equal((await r.json()).error.code, 'unknown_provider_config');
            r = await gateway.fetch('/proxy/x', { headers: { 'provider-config-key': 'declared-acme', 'connection-id': 'nobody' } });
            assert.equal(r.status, 400);
            assert.equal((await r.json()).error.code, 'unknown_connection');
            r = await fetch(`${gateway.url}/proxy/x`, { headers: { authorization: 'Bearer wrong', 'provider-config-key': 'declared-acme', 'connection-id': 'user-1' } });
            assert.equal(r.status, 401);
        });

        it('lists connections with filters', async () => {
            let { connections } = await nango.listConnections();
            const ids = connections.map((c) => c.connection_id);
            for (const id of ['user-1', 'user-2', 'user-3']) assert.ok(ids.includes(id));
            ({ connections } = await nango.listConnections({ userId: 'u1' }));
            assert.deepEqual(connections.map((c) => c.connection_id), ['user-1']);
            ({ connections } = await nango.listConnections({ tags: { plan: 'pro' } }));
            assert.deepEqual(connections.map((c) => c.connection_id), ['user-1']);
            ({ connections } = await nango.listConnections({ tags: { email: 'ann@example.com' } }));
            assert.deepEqual(connections.map((c) => c.connection_id), ['user-1']);
            ({ connections } = await nango.listConnections({ integrationId: ['acme-basic', 'acme-oauth-prod'] }));
            assert.deepEqual(connections.map((c) => c.connection_id).sort(), ['no-tenant', 'user-2', 'user-3']);
            ({ connections } = await nango.listConnections(undefined, 'ANN'));
            assert.deepEqual(connections.map((c) => c.connection_id), ['user-1'], 'search matches the end user, case-insensitively');
            ({ connections } = await nango.listConnections({ limit: 2 }));
            assert.equal(connections.length, 2);
            const r = await gateway.fetch('/connections?limit=0');
            assert.equal(r.status, 400);
            assert.deepEqual((await r.json()).error.errors[0].path, ['limit']);
        });

        it('sets and merges metadata, all or nothing', async () => {
            await nango.setMetadata('declared-acme', 'user-1', { a: 1, b: { c: 2 } });
            assert.deepEqual(await nango.getMetadata('declared-acme', 'user-1'), { a: 1, b: { c: 2 } });
            await nango.updateMetadata('declared-acme', 'user-1', { b: 3, d: 'x' });
            assert.deepEqual(await nango.getMetadata('declared-acme', 'user-1'), { a: 1, b: 3, d: 'x' });
            await nango.setMetadata('declared-acme', 'user-1', { only: true });
            assert.deepEqual(await nango.getMetadata('declared-acme', 'user-1'), { only: true });

            const { status } = await statusOf(nango.setMetadata('declared-acme', ['user-1', 'ghost'], { z: 1 }));
            assert.equal(status, 404);
            assert.deepEqual(await nango.getMetadata('declared-acme', 'user-1'), { only: true }, 'nothing was written');
        });

        it('patches end user and tags, and serves the singular legacy paths', async () => {
            await nango.patchConnection({ connectionId: 'user-2', provider_config_key: 'acme-oauth-prod' }, {
                end_user: { id: 'u2', email: 'bob@example.com' },
                tags: { team: 'blue' }
            });
            const c = await nango.getConnection('acme-oauth-prod', 'user-2');
            assert.equal(c.end_user.id, 'u2');
            assert.equal(c.tags.team, 'blue');
            assert.equal(c.tags.end_user_email, 'bob@example.com');

            const legacy = await gateway.fetch('/connection/user-2?provider_config_key=acme-oauth-prod');
            assert.equal(legacy.status, 200);
            assert.equal((await legacy.json()).connection_id, 'user-2');
            const list = await gateway.fetch('/connection');
            assert.ok((await list.json()).connections.length >= 3);
        });

        it('deletes connections and integrations', async () => {
            const res = await nango.deleteConnection('acme-basic', 'user-3');
            assert.equal(res.status, 200);
            assert.equal((await statusOf(nango.getConnection('acme-basic', 'user-3'))).status, 404);
            assert.equal((await statusOf(nango.deleteConnection('acme-basic', 'user-3'))).status, 400);

            await nango.deleteIntegration('acme-oauth-prod');
            assert.equal((await statusOf(nango.getIntegration({ uniqueKey: 'acme-oauth-prod' }))).status, 404);
            const { connections } = await nango.listConnections({ integrationId: 'acme-oauth-prod' });
            assert.equal(connections.length, 0, "an integration's connections go with it");
        });

        it('requires the secret key and answers CORS preflights', async () => {
            let r = await fetch(`${gateway.url}/integrations`);
            assert.equal(r.status, 401);
            assert.equal((await r.json()).error.code, 'missing_auth_header');
            r = await fetch(`${gateway.url}/integrations`, { headers: { authorization: 'Bearer nope' } });
            assert.equal(r.status, 401);
            r = await fetch(`${gateway.url}/integrations`, {
                method: 'OPTIONS',
                headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' }
            });
            assert.ok(r.status < 300);
            assert.equal(r.headers.get('access-control-allow-origin'), '*');
            r = await fetch(`${gateway.url}/health/`);
            assert.deepEqual(await r.json(), { result: 'ok' }, 'a trailing slash is the same path');
        });

        it('serves the catalog', async () => {
            const { data } = await nango.listProviders({ search: '^acme-b' });
            assert.deepEqual(data.map((p) => p.name), ['acme-basic']);
            const one = await nango.getProvider({ provider: 'acme-apikey' });
            assert.equal(one.data.auth_mode, 'API_KEY');
            assert.ok(one.data.logo_url.endsWith('/images/template-logos/acme-apikey.svg'));
            assert.equal((await statusOf(nango.getProvider({ provider: 'nope' }))).status, 404);
        });
    });
}
