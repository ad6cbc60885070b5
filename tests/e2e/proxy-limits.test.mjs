// Rate limits in front of the upstream: the catalog's rate_limit and nango.yaml's rate_limits
// (requests per interval, concurrency), answered with 429 and Retry-After when the wait would be
// too long, and the pause an upstream's own 429 asks for.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

function limitedCatalog(upstreamUrl) {
    const provider = (name, rateLimit) => `
${name}:
    display_name: ${name}
    categories: [other]
    auth_mode: API_KEY
    proxy:
        base_url: ${upstreamUrl}
        headers:
            x-api-key: \${apiKey}
${rateLimit}
    docs: https://example.com/acme
`;
    return (
        provider('acme-rated', '    rate_limit:\n        per_connection: { requests: 2, interval: 1h, max_wait: 0ms }') +
        provider('acme-serial', '    rate_limit:\n        per_provider: { concurrency: 1, max_wait: 300ms }') +
        provider('acme-overridden', '    rate_limit:\n        per_connection: { requests: 1000 }') +
        provider('acme-free', '')
    );
}

describe('proxy rate limits', () => {
    let upstream, gateway;
    let answer429 = 0;

    const call = (key, connection, path = '/x') =>
        gateway.fetch(`/proxy${path}`, { headers: { 'provider-config-key': key, 'connection-id': connection } });

    before(async () => {
        upstream = await startUpstream(async (req, res) => {
            if (req.url.startsWith('/slow')) await new Promise((resolve) => setTimeout(resolve, 1500));
            if (req.url.startsWith('/busy') && answer429 > 0) {
                answer429--;
                res.writeHead(429, { 'retry-after': '30' });
                res.end('slow down');
                return;
            }
            res.writeHead(200, { 'content-type': 'text/plain' });
            res.end('ok');
        });
        gateway = await startGateway({
            config: [
                'catalogs: [test-catalog.yaml]',
                'rate_limits:',
                '  acme-overridden:',
                '    per_connection: { requests: 1, interval: 1h, max_wait: 0ms }',
                'integrations:',
                ...['acme-rated', 'acme-serial', 'acme-overridden', 'acme-free'].map((p) => `  ${p}:\n    provider: ${p}`)
            ].join('\n'),
            files: { 'test-catalog.yaml': limitedCatalog(upstream.url) }
        });
        for (const key of ['acme-rated', 'acme-serial', 'acme-overridden', 'acme-free']) {
            for (const id of ['alice', 'bob']) {
                const r = await gateway.fetch('/connections', {
                    method: 'POST',
                    headers: { 'content-type': 'application/json' },
                    body: JSON.stringify({ provider_config_key: key, connection_id: id, credentials: { type: 'API_KEY', apiKey: 'k-1' } })
                });
                assert.ok(r.ok, await r.text());
            }
        }
    });

    after(async () => {
        await gateway?.stop();
        await upstream?.close();
    });

    it('refuses requests over a per-connection rate with 429 and Retry-After', async () => {
        assert.equal((await call('acme-rated', 'alice')).status, 200);
        assert.equal((await call('acme-rated', 'alice')).status, 200);
        const before = upstream.requests.length;
        const r = await call('acme-rated', 'alice');
        assert.equal(r.status, 429);
        const retryAfter = Number(r.headers.get('retry-after'));
        assert.ok(retryAfter > 1000 && retryAfter <= 1800, `retry-after ${retryAfter}`);
        assert.equal((await r.json()).error.code, 'too_many_request');
        assert.equal(upstream.requests.length, before, 'the upstream was not called');
        assert.equal((await call('acme-rated', 'bob')).status, 200, 'another connection has its own budget');
    });

    it("lets nango.yaml's rate_limits replace the catalog's", async () => {
        assert.equal((await call('acme-overridden', 'alice')).status, 200);
        assert.equal((await call('acme-overridden', 'alice')).status, 429);
    });

    it('limits requests in flight per provider, waiting up to max_wait', async () => {
        const [a, b] = await Promise.all([call('acme-serial', 'alice', '/slow'), call('acme-serial', 'bob', '/slow')]);
        assert.deepEqual([a.status, b.status].sort(), [200, 429]);
        assert.equal((await call('acme-serial', 'bob')).status, 200, 'the place is given back');
    });

    it("pauses a connection for as long as the upstream's 429 asks", async () => {
        answer429 = 1;
        let r = await call('acme-free', 'alice', '/busy');
        assert.equal(r.status, 429);
        assert.equal(await r.text(), 'slow down', "the upstream's own answer is passed on");
        const before = upstream.requests.length;
        r = await call('acme-free', 'alice', '/busy');
        assert.equal(r.status, 429);
        const retryAfter = Number(r.headers.get('retry-after'));
        assert.ok(retryAfter > 20 && retryAfter <= 30, `retry-after ${retryAfter}`);
        assert.equal(upstream.requests.length, before, 'the paused connection did not reach the upstream');
        assert.equal((await call('acme-free', 'bob', '/busy')).status, 200, 'other connections go on');
    });
});
