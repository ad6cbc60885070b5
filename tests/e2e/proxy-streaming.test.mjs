// Bodies through /proxy: 1 GiB each way with the gateway's memory measured, server-sent events
// and chunked responses delivered as they are written, multipart uploads byte for byte,
// Decompress, and timeouts and unreachable upstreams answered with messages that say what failed.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';

import { freePort, startGateway } from '../support/gateway.mjs';

const GiB = 1024 * 1024 * 1024;
const CHUNK = Buffer.alloc(1024 * 1024, 0x5a);

/** The gateway's resident memory, in bytes: `VmRSS` and `VmHWM` (peak). */
async function memory(gateway) {
    const status = await fs.readFile(`/proc/${gateway.child.pid}/status`, 'utf8');
    const kib = (name) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'))[1]) * 1024;
    return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/** Resets the peak so that VmHWM measures from now (Linux: `5` into clear_refs). */
async function resetPeak(gateway) {
    await fs.writeFile(`/proc/${gateway.child.pid}/clear_refs`, '5');
}

/** Writes `total` bytes to `stream` from one reused buffer, honouring backpressure. */
async function pump(stream, total) {
    let sent = 0;
    while (sent < total) {
        const n = Math.min(CHUNK.length, total - sent);
        const ok = stream.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
        sent += n;
        if (!ok) await new Promise((resolve) => stream.once('drain', resolve));
    }
}

/** An upstream driven per path by the tests. */
async function startStreamingUpstream(routes) {
    const server = http.createServer((req, res) => {
        const route = routes[new URL(req.url, 'http://x').pathname];
        if (route) return route(req, res);
        res.writeHead(404);
        res.end();
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

/** A request through the gateway's proxy with Node's http module, which does not decode bodies. */
function proxyRequest(gateway, path, { method = 'GET', headers = {}, onResponse } = {}) {
    return http.request({
        host: '127.0.0.1',
        port: gateway.port,
        method,
        path: `/proxy${path}`,
        headers: { authorization: `Bearer ${gateway.secretKey}`, 'provider-config-key': 'acme', 'connection-id': 'alice', ...headers }
    }, onResponse);
}

function collect(res) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks)));
        res.on('error', reject);
    });
}

describe('proxy streaming', () => {
    let upstream, gateway;
    let releaseSecondEvent;
    const uploads = [];

    before(async () => {
        upstream = await startStreamingUpstream({
            '/download': async (req, res) => {
                res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(GiB) });
                await pump(res, GiB);
                res.end();
            },
            '/upload': async (req, res) => {
                let bytes = 0;
                for await (const chunk of req) bytes += chunk.length;
                res.writeHead(200, { 'content-type': 'application/json' });
                res.end(JSON.stringify({ bytes }));
            },
            '/events': async (req, res) => {
                res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
                res.write('data: first\n\n');
                await new Promise((resolve) => (releaseSecondEvent = resolve));
                res.end('data: second\n\n');
            },
            '/form': async (req, res) => {
                const chunks = [];
                for await (const chunk of req) chunks.push(chunk);
                uploads.push({ contentType: req.headers['content-type'], body: Buffer.concat(chunks) });
                res.writeHead(201, { 'content-type': 'text/plain' });
                res.end('stored');
            },
            '/gzipped': (req, res) => {
                res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip' });
                res.end(zlib.gzipSync(Buffer.from('decoded text '.repeat(1000))));
            },
            '/silent': () => {
                // never answers
            }
        });
        gateway = await startGateway({
            config: 'catalogs: [test-catalog.yaml]\nproxy:\n  read_timeout: 1s\nintegrations:\n  acme:\n    provider: acme-stream\n',
            files: {
                'test-catalog.yaml': `
acme-stream:
    display_name: Acme streams
    categories: [other]
    auth_mode: API_KEY
    proxy:
        base_url: ${upstream.url}
        headers:
            x-api-key: \${apiKey}
    docs: https://example.com/acme
`
            }
        });
        const r = await gateway.fetch('/connections', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ provider_config_key: 'acme', connection_id: 'alice', credentials: { type: 'API_KEY', apiKey: 'k-1' } })
        });
        assert.ok(r.ok, await r.text());
    });

    after(async () => {
        await gateway?.stop();
        await upstream?.close();
    });

    it('downloads 1 GiB with the gateway growing by less than 64 MiB', { timeout: 600_000 }, async () => {
        const before = await memory(gateway);
        await resetPeak(gateway);
        const received = await new Promise((resolve, reject) => {
            const req = proxyRequest(gateway, '/download', {
                onResponse: (res) => {
                    let bytes = 0;
                    res.on('data', (c) => (bytes += c.length));
                    res.on('end', () => resolve(bytes));
                    res.on('error', reject);
                }
            });
            req.on('error', reject);
            req.end();
        });
        assert.equal(received, GiB);
        const after = await memory(gateway);
        const growth = after.hwm - before.rss;
        console.log(`download: RSS before ${before.rss >> 20} MiB, peak during ${after.hwm >> 20} MiB`);
        assert.ok(growth < 64 * 1024 * 1024, `the gateway grew by ${growth >> 20} MiB`);
    });

    it('uploads 1 GiB with the gateway growing by less than 64 MiB', { timeout: 600_000 }, async () => {
        const before = await memory(gateway);
        await resetPeak(gateway);
        const answer = await new Promise((resolve, reject) => {
            const req = proxyRequest(gateway, '/upload', {
                method: 'PUT',
                headers: { 'content-type': 'application/octet-stream', 'content-length': String(GiB), retries: '2' },
                onResponse: (res) => collect(res).then((b) => resolve({ status: res.statusCode, body: JSON.parse(b) }), reject)
            });
            req.on('error', reject);
            pump(req, GiB).then(() => req.end(), reject);
        });
        assert.equal(answer.status, 200);
        assert.equal(answer.body.bytes, GiB);
        const after = await memory(gateway);
        const growth = after.hwm - before.rss;
        console.log(`upload: RSS before ${before.rss >> 20} MiB, peak during ${after.hwm >> 20} MiB`);
        assert.ok(growth < 64 * 1024 * 1024, `the gateway grew by ${growth >> 20} MiB`);
    });

    it('delivers server-sent events as they are written', async () => {
        const body = await new Promise((resolve, reject) => {
            const req = proxyRequest(gateway, '/events', {
                onResponse: (res) => {
                    assert.equal(res.headers['content-type'], 'text/event-stream');
                    let text = '';
                    res.setEncoding('utf8');
                    res.on('data', (c) => {
                        text += c;
                        // The upstream holds the second event until the first has arrived here.
                        if (text.includes('data: first') && releaseSecondEvent) {
                            releaseSecondEvent();
                            releaseSecondEvent = null;
                        }
                    });
                    res.on('end', () => resolve(text));
                    res.on('error', reject);
                }
            });
            req.on('error', reject);
            req.end();
        });
        assert.equal(body, 'data: first\n\ndata: second\n\n');
    });

    it('passes multipart uploads through byte for byte', async () => {
        const form = new FormData();
        form.append('name', 'report');
        form.append('file', new Blob([Buffer.from([0, 1, 2, 255, 254])], { type: 'application/octet-stream' }), 'data.bin');
        const encoded = new Response(form);
        const contentType = encoded.headers.get('content-type');
        const bytes = Buffer.from(await encoded.arrayBuffer());
        const r = await gateway.fetch('/proxy/form', {
            method: 'POST',
            headers: { 'provider-config-key': 'acme', 'connection-id': 'alice', 'content-type': contentType },
            body: bytes
        });
        assert.equal(r.status, 201);
        const seen = uploads.at(-1);
        assert.equal(seen.contentType, contentType);
        assert.ok(seen.body.equals(bytes));
    });

    it('decodes compressed bodies when Decompress is true, and passes them as sent otherwise', async () => {
        const get = (headers) =>
            new Promise((resolve, reject) => {
                const req = proxyRequest(gateway, '/gzipped', {
                    headers,
                    onResponse: (res) => collect(res).then((body) => resolve({ headers: res.headers, body }), reject)
                });
                req.on('error', reject);
                req.end();
            });
        const decoded = await get({ decompress: 'true' });
        assert.equal(decoded.headers['content-encoding'], undefined);
        assert.equal(decoded.body.toString(), 'decoded text '.repeat(1000));
        const raw = await get({});
        assert.equal(raw.headers['content-encoding'], 'gzip');
        assert.equal(zlib.gunzipSync(raw.body).toString(), 'decoded text '.repeat(1000));
    });

    it('answers 504 naming the first-byte timeout, and 502 naming an unreachable upstream', async () => {
        let r = await gateway.fetch('/proxy/silent', { headers: { 'provider-config-key': 'acme', 'connection-id': 'alice' } });
        assert.equal(r.status, 504);
        let body = await r.json();
        assert.equal(body.error.code, 'upstream_first_byte_timeout');
        assert.match(body.error.message, /first-byte timeout: 127\.0\.0\.1 sent no response within 1s/);

        const closedPort = await freePort();
        await gateway.fetch('/integrations', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ provider: 'acme-stream', unique_key: 'acme-open', allow_base_url_override: true })
        });
        await gateway.fetch('/connections', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ provider_config_key: 'acme-open', connection_id: 'c', credentials: { type: 'API_KEY', apiKey: 'k' } })
        });
        r = await gateway.fetch('/proxy/x', {
            headers: { 'provider-config-key': 'acme-open', 'connection-id': 'c', 'base-url-override': `http://127.0.0.1:${closedPort}` }
        });
        assert.equal(r.status, 502);
        body = await r.json();
        assert.equal(body.error.code, 'upstream_unreachable');
        assert.match(body.error.message, new RegExp(`127\\.0\\.0\\.1:${closedPort}`));
    });
});
