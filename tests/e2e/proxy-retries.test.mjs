// Retries through /proxy: Nango's Retries and Retry-On headers, the upstream's wait hints
// (Retry-After in both forms, the provider's proxy.retry headers), the time budget, bodies
// replayed on retry, and what is never retried. The retry logic does not touch the database, so
// one SQLite gateway serves every case.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { loopbackCatalog } from '../support/catalog.mjs';
import { startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

/** A catalog entry with GitHub-style retry rules, on the same upstream. */
function hintedProvider(upstreamUrl) {
    return `
acme-hinted:
    display_name: Acme (retry hints)
    categories: [other]
    auth_mode: API_KEY
    proxy:
        base_url: ${upstreamUrl}
        headers:
            x-api-key: \${apiKey}
        retry:
            at: [x-ratelimit-reset]
            remaining: x-ratelimit-remaining
            error_code: ['403', 5xx]
    docs: https://example.com/acme
`;
}

describe('proxy retries', () => {
    let upstream, gateway;
    /** Per path: the statuses (and headers) to answer with, in order; then 200. */
    const scripts = new Map();

    const call = (path, { headers = {}, key = 'acme', connection = 'alice', ...init } = {}) =>
        gateway.fetch(`/proxy${path}`, { ...init, headers: { 'provider-config-key': key, 'connection-id': connection, ...headers } });
    const seen = (path) => upstream.requests.filter((r) => r.url.split('?')[0].endsWith(path));

    before(async () => {
        upstream = await startUpstream((req, res, body) => {
            const path = req.url.split('?')[0];
            const script = [...scripts.entries()].find(([p]) => path.endsWith(p))?.[1];
            const step = script?.shift();
            if (step === 'reset') {
                req.socket.destroy();
                return;
            }
            if (step) {
                res.writeHead(step.status, { 'content-type': 'text/plain', ...(step.headers || {}) });
                res.end(`failure ${step.status}`);
                return;
            }
            res.writeHead(200, { 'content-type': 'text/plain' });
            res.end(`ok ${body.length}`);
        });
        gateway = await startGateway({
            config: 'catalogs: [test-catalog.yaml]\nintegrations:\n  acme:\n    provider: acme-apikey\n  hinted:\n    provider: acme-hinted\n',
            files: { 'test-catalog.yaml': loopbackCatalog(upstream.url) + hintedProvider(upstream.url) }
        });
        for (const [key, id] of [['acme', 'alice'], ['acme', 'bob'], ['hinted', 'alice']]) {
            const r = await gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ provider_config_key: key, connection_id: id, credentials: { type: 'API_KEY', apiKey: 'k-123456' } })
            });
            assert.ok(r.ok, await r.text());
        }
    });

    after(async () => {
        await gateway?.stop();
        await upstream?.close();
    });

    it('retries 5xx and 429 as often as Retries allows, and logs the count', async () => {
        scripts.set('/flaky', [{ status: 503, headers: { 'retry-after': '0' } }, { status: 429, headers: { 'retry-after': '0' } }]);
        const r = await call('/flaky', { headers: { retries: '3' } });
        assert.equal(r.status, 200);
        assert.equal(await r.text(), 'ok 0');
        assert.equal(seen('/flaky').length, 3);
        const deadline = Date.now() + 20_000;
        for (;;) {
            const { logs } = await (await gateway.fetch('/logs?integration=acme&type=proxy')).json();
            const entry = logs.find((l) => l.path === '/flaky');
            if (entry) {
                assert.equal(entry.retries, 2);
                assert.equal(entry.status, 200);
                break;
            }
            assert.ok(Date.now() < deadline, 'the entry was written');
            await new Promise((resolve) => setTimeout(resolve, 100));
        }
    });

    it('passes the last failure on when retries run out, and never retries unasked', async () => {
        scripts.set('/down', [503, 503, 503, 503].map((status) => ({ status, headers: { 'retry-after': '0' } })));
        let r = await call('/down', { headers: { retries: '1' } });
        assert.equal(r.status, 503);
        assert.equal(await r.text(), 'failure 503');
        assert.equal(seen('/down').length, 2);
        r = await call('/down');
        assert.equal(r.status, 503);
        assert.equal(seen('/down').length, 3, 'no Retries header, no retry');
    });

    it('retries statuses named in Retry-On, and POST bodies go again whole', async () => {
        scripts.set('/conflict', [{ status: 409, headers: { 'retry-after': '0' } }]);
        const r = await call('/conflict', { method: 'POST', body: 'payload-1', headers: { retries: '2', 'retry-on': '409' } });
        assert.equal(r.status, 200);
        assert.deepEqual(seen('/conflict').map((s) => [s.method, s.body]), [['POST', 'payload-1'], ['POST', 'payload-1']]);
    });

    it('waits as long as Retry-After asks, in seconds or as an HTTP date', async () => {
        scripts.set('/slow-seconds', [{ status: 503, headers: { 'retry-after': '1' } }]);
        let started = Date.now();
        let r = await call('/slow-seconds', { headers: { retries: '1' } });
        assert.equal(r.status, 200);
        assert.ok(Date.now() - started >= 900, `waited ${Date.now() - started} ms`);

        scripts.set('/slow-date', [{ status: 429, headers: { 'retry-after': new Date(Date.now() + 2000).toUTCString() } }]);
        started = Date.now();
        r = await call('/slow-date', { headers: { retries: '1' } });
        assert.equal(r.status, 200);
        assert.ok(Date.now() - started >= 900, `waited ${Date.now() - started} ms`);
    });

    it('does not start a retry that would end past the time budget', async () => {
        scripts.set('/later', [{ status: 429, headers: { 'retry-after': '3600' } }]);
        const started = Date.now();
        // Bob's connection: the 429 pauses it for an hour (see proxy-limits).
        const r = await call('/later', { connection: 'bob', headers: { retries: '5' } });
        assert.equal(r.status, 429);
        assert.equal(r.headers.get('retry-after'), '3600');
        assert.equal(seen('/later').length, 1);
        assert.ok(Date.now() - started < 30_000);
    });

    it("follows the provider's proxy.retry rules: error codes, remaining and reset headers", async () => {
        const reset = String(Math.ceil(Date.now() / 1000) + 1);
        scripts.set('/limited', [{ status: 403, headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': reset } }]);
        const started = Date.now();
        let r = await call('/limited', { key: 'hinted', headers: { retries: '1' } });
        assert.equal(r.status, 200);
        assert.equal(seen('/limited').length, 2);
        assert.ok(Date.now() - started >= 200, 'waited for the reset instant');

        scripts.set('/teapot', [{ status: 429, headers: { 'retry-after': '0' } }]);
        r = await call('/teapot', { key: 'hinted', headers: { retries: '1' } });
        assert.equal(r.status, 429, "429 is not in this provider's error_code list");
    });

    it('retries a reset connection with back-off', async () => {
        scripts.set('/reset', ['reset']);
        const r = await call('/reset', { headers: { retries: '1' } });
        assert.equal(r.status, 200);
        assert.equal(seen('/reset').length, 2);
    });

    it('does not retry a body too large to replay, and passes the answer on', async () => {
        scripts.set('/big', [{ status: 503, headers: { 'retry-after': '0' } }]);
        const body = Buffer.alloc(1024 * 1024, 1);
        const r = await call('/big', { method: 'PUT', body, headers: { retries: '2', 'content-type': 'application/octet-stream' } });
        assert.equal(r.status, 503);
        assert.equal(seen('/big').length, 1);
        assert.equal(seen('/big')[0].body.length, body.length, 'the whole body reached the upstream');
    });

    it('sends a 401 once when the credentials did not change', async () => {
        scripts.set('/private', [{ status: 401 }, { status: 401 }, { status: 401 }]);
        const r = await call('/private', { headers: { retries: '2' } });
        assert.equal(r.status, 401);
        assert.equal(seen('/private').length, 1);
    });

    it('refuses malformed retry headers', async () => {
        for (const headers of [{ retries: 'many' }, { retries: '99' }, { 'retry-on': '429;503' }]) {
            const r = await call('/x', { headers });
            assert.equal(r.status, 400, JSON.stringify(headers));
            assert.equal((await r.json()).error.code, 'invalid_headers');
        }
    });
});
