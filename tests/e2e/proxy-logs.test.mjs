// The log store behind GET /logs: one entry per proxied request, filters, a cursor that holds
// while new entries arrive, retention, and no credential in any entry.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { loopbackCatalog } from '../support/catalog.mjs';
import { databases } from '../support/db.mjs';
import { startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

const API_KEY = 'key_live_7d1f3a9c5e2b';

/** Polls GET /logs until `accept(body)` holds; the writer is asynchronous. */
async function logsUntil(gateway, query, accept) {
    const deadline = Date.now() + 20_000;
    for (;;) {
        const r = await gateway.fetch(`/logs?${query}`);
        assert.equal(r.status, 200, await r.clone().text());
        const body = await r.json();
        if (accept(body)) return body;
        if (Date.now() > deadline) assert.fail(`GET /logs?${query} never matched: ${JSON.stringify(body)}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
}

async function createConnection(gateway, key, id, credentials) {
    const r = await gateway.fetch('/connections', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ provider_config_key: key, connection_id: id, credentials })
    });
    assert.ok(r.ok, await r.text());
}

for (const db of databases()) {
    describe(`proxy logs on ${db}`, () => {
        let upstream, gateway;
        const proxy = (path, connection = 'alice', init = {}) =>
            gateway.fetch(`/proxy${path}`, {
                ...init,
                headers: { 'provider-config-key': 'acme', 'connection-id': connection, ...(init.headers || {}) }
            });

        before(async () => {
            upstream = await startUpstream((req, res, body) => {
                const status = Number(new URL(req.url, 'http://x').searchParams.get('status') || 200);
                res.writeHead(status, { 'content-type': 'text/plain' });
                res.end(`got ${body.length} bytes`);
            });
            gateway = await startGateway({
                db,
                config: 'catalogs: [test-catalog.yaml]\nintegrations:\n  acme:\n    provider: acme-apikey\n  other:\n    provider: acme-apikey\n',
                files: { 'test-catalog.yaml': loopbackCatalog(upstream.url) }
            });
            await createConnection(gateway, 'acme', 'alice', { type: 'API_KEY', apiKey: API_KEY });
            await createConnection(gateway, 'acme', 'bob', { type: 'API_KEY', apiKey: API_KEY });
            await createConnection(gateway, 'other', 'alice', { type: 'API_KEY', apiKey: API_KEY });
        });

        after(async () => {
            await gateway?.stop();
            await upstream?.close();
        });

        it('writes one entry per proxied request, with sizes, status and latency', async () => {
            const r = await proxy(`/items/42?token=${API_KEY}`, 'alice', { method: 'POST', body: 'hello world' });
            assert.equal(r.status, 200);
            assert.equal(await r.text(), 'got 11 bytes');
            const body = await logsUntil(gateway, 'integration=acme&connection=alice&type=proxy', (b) => b.logs.length >= 1);
            const [entry] = body.logs;
            assert.equal(entry.type, 'proxy');
            assert.equal(entry.level, 'info');
            assert.equal(entry.integration, 'acme');
            assert.equal(entry.connection, 'alice');
            assert.equal(entry.method, 'POST');
            assert.equal(entry.path, '/items/42', 'the query string is not logged');
            assert.equal(entry.status, 200);
            assert.equal(entry.request_bytes, 11);
            assert.equal(entry.response_bytes, 12);
            assert.equal(entry.retries, 0);
            assert.equal(entry.error, null);
            assert.ok(entry.latency_ms >= 0);
            assert.ok(!Number.isNaN(Date.parse(entry.created_at)));
            assert.ok(!JSON.stringify(body).includes(API_KEY), 'no credential in any entry');
        });

        it('filters by integration, connection, status class, failure and time, and pages with a stable cursor', async () => {
            const since = new Date().toISOString();
            for (let i = 0; i < 5; i++) assert.equal((await proxy(`/page/${i}`, 'bob')).status, 200);
            assert.equal((await proxy('/broken?status=503', 'bob')).status, 503);
            assert.equal((await proxy('/x', 'nobody')).status, 400);
            await logsUntil(gateway, `connection=bob&from=${since}`, (b) => b.logs.length === 6);

            const failed = await logsUntil(gateway, `connection=bob&status=5xx`, (b) => b.logs.length === 1);
            assert.equal(failed.logs[0].path, '/broken');
            assert.equal(failed.logs[0].status, 503);
            const refused = await logsUntil(gateway, `connection=nobody&failed=true`, (b) => b.logs.length === 1);
            assert.equal(refused.logs[0].status, 400);
            assert.equal(refused.logs[0].error, 'unknown_connection');
            const none = await gateway.fetch(`/logs?integration=other&from=${since}`);
            assert.deepEqual((await none.json()).logs, []);
            const future = await gateway.fetch(`/logs?to=${encodeURIComponent('2000-01-01T00:00:00Z')}`);
            assert.deepEqual((await future.json()).logs, []);

            // Page through bob's entries two at a time while new ones keep arriving.
            const seen = [];
            let cursor = null;
            for (let page = 0; page < 10; page++) {
                const q = `connection=bob&from=${since}&limit=2${cursor ? `&cursor=${cursor}` : ''}`;
                const body = await (await gateway.fetch(`/logs?${q}`)).json();
                seen.push(...body.logs.map((l) => l.path));
                await proxy('/later', 'bob');
                cursor = body.next_cursor;
                if (!cursor) break;
            }
            assert.deepEqual(seen, ['/broken', '/page/4', '/page/3', '/page/2', '/page/1', '/page/0'], 'newest first, none twice, none lost');
        });

        it('refuses bad filters, naming the parameter', async () => {
            for (const [q, name] of [
                ['status=9xx', 'status'],
                ['type=sync', 'type'],
                ['limit=0', 'limit'],
                ['from=yesterday', 'from'],
                ['cursor=zzz', 'cursor'],
                ['colour=red', 'colour']
            ]) {
                const r = await gateway.fetch(`/logs?${q}`);
                assert.equal(r.status, 400, q);
                const body = await r.json();
                assert.equal(body.error.code, 'invalid_query_params');
                assert.match(body.error.message, new RegExp(name), q);
            }
            const r = await fetch(`${gateway.url}/logs`);
            assert.equal(r.status, 401, 'the secret key is required');
        });
    });
}

describe('log retention', () => {
    let upstream, gateway;

    before(async () => {
        upstream = await startUpstream();
        gateway = await startGateway({
            config: 'catalogs: [test-catalog.yaml]\nlogs:\n  retention: 2s\nintegrations:\n  acme:\n    provider: acme-apikey\n',
            files: { 'test-catalog.yaml': loopbackCatalog(upstream.url) }
        });
        await createConnection(gateway, 'acme', 'alice', { type: 'API_KEY', apiKey: API_KEY });
    });

    after(async () => {
        await gateway?.stop();
        await upstream?.close();
    });

    it('deletes entries older than logs.retention', async () => {
        const r = await gateway.fetch('/proxy/old', { headers: { 'provider-config-key': 'acme', 'connection-id': 'alice' } });
        assert.equal(r.status, 200);
        await logsUntil(gateway, 'integration=acme', (b) => b.logs.some((l) => l.path === '/old'));
        await logsUntil(gateway, 'integration=acme', (b) => !b.logs.some((l) => l.path === '/old'));
    });
});
