// Upstreams over TLS, as every real provider is: the gateway verifies the upstream's certificate
// against the system's roots (here a test CA given through SSL_CERT_FILE), speaks HTTP/2 where
// the upstream offers it and HTTP/1.1 where it does not, and answers a silent upstream with a
// 504 over TLS too.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http2 from 'node:http2';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { startGateway } from '../support/gateway.mjs';

/** A test CA, which the gateway is told to trust, and a certificate it signed for `localhost`. */
async function localhostCertificate(dir) {
    const file = (name) => path.join(dir, name);
    const openssl = (...args) => execFileSync('openssl', args, { stdio: 'ignore' });
    const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    openssl('req', '-x509', ...ecKey, '-days', '1', '-subj', '/CN=Latchkey test CA', '-keyout', file('ca.key'), '-out', file('ca.pem'));
    openssl('req', ...ecKey, '-subj', '/CN=localhost', '-keyout', file('key.pem'), '-out', file('leaf.csr'));
    await fs.writeFile(file('leaf.ext'), 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n');
    openssl('x509', '-req', '-in', file('leaf.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial',
        '-days', '1', '-extfile', file('leaf.ext'), '-out', file('cert.pem'));
    return { key: await fs.readFile(file('key.pem')), cert: await fs.readFile(file('cert.pem')), caFile: file('ca.pem') };
}

/** Answers with what it saw: the protocol version, the injected key and the path. */
function handler(req, res) {
    const answer = () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ httpVersion: req.httpVersion, apiKey: req.headers['x-api-key'], path: req.url }));
    };
    if (req.url.startsWith('/slow')) setTimeout(answer, 2_000);
    else answer();
}

async function listen(server) {
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return server.address().port;
}

describe('proxy to TLS upstreams', () => {
    let dir, h2Server, h1Server, gateway;

    before(async () => {
        dir = await fs.mkdtemp(path.join(os.tmpdir(), 'latchkey-tls-'));
        const { key, cert, caFile } = await localhostCertificate(dir);
        h2Server = http2.createSecureServer({ key, cert, allowHTTP1: true }, handler);
        h1Server = https.createServer({ key, cert }, handler);
        const h2Port = await listen(h2Server);
        const h1Port = await listen(h1Server);
        const provider = (name, baseUrl) => `
${name}:
    display_name: ${name}
    categories: [other]
    auth_mode: API_KEY
    proxy:
        base_url: ${baseUrl}
        headers:
            x-api-key: \${apiKey}
    docs: https://example.com/${name}
`;
        gateway = await startGateway({
            config: [
                'catalogs: [test-catalog.yaml]',
                'proxy:\n  read_timeout: 1s',
                'integrations:',
                '  h2:\n    provider: tls-h2',
                '  h1:\n    provider: tls-h1',
                '  wrong-name:\n    provider: tls-wrong-name',
                ''
            ].join('\n'),
            files: {
                'test-catalog.yaml':
                    provider('tls-h2', `https://localhost:${h2Port}`) +
                    provider('tls-h1', `https://localhost:${h1Port}`) +
                    // The certificate names localhost, not the address.
                    provider('tls-wrong-name', `https://127.0.0.1:${h2Port}`)
            },
            env: { SSL_CERT_FILE: caFile }
        });
        for (const key of ['h2', 'h1', 'wrong-name']) {
            const r = await gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ provider_config_key: key, connection_id: 'alice', credentials: { type: 'API_KEY', apiKey: `key-${key}` } })
            });
            assert.ok(r.ok, await r.text());
        }
    });

    after(async () => {
        await gateway?.stop();
        h2Server?.close();
        h1Server?.close();
        if (dir) await fs.rm(dir, { recursive: true, force: true });
    });

    const proxy = (key, endpoint) => gateway.fetch(`/proxy${endpoint}`, { headers: { 'provider-config-key': key, 'connection-id': 'alice' } });

    it('speaks HTTP/2 to an upstream that offers it, with the credentials injected', async () => {
        for (let i = 0; i < 3; i++) {
            const r = await proxy('h2', `/items?page=${i}`);
            assert.equal(r.status, 200, await r.clone().text());
            assert.deepEqual(await r.json(), { httpVersion: '2.0', apiKey: 'key-h2', path: `/items?page=${i}` });
        }
    });

    it('speaks HTTP/1.1 over TLS to an upstream without HTTP/2', async () => {
        const r = await proxy('h1', '/items');
        assert.equal(r.status, 200);
        assert.deepEqual(await r.json(), { httpVersion: '1.1', apiKey: 'key-h1', path: '/items' });
    });

    it('answers 504 naming the first-byte timeout over TLS, on HTTP/2 and HTTP/1.1', async () => {
        for (const key of ['h1', 'h2']) {
            const started = Date.now();
            const r = await proxy(key, '/slow');
            assert.equal(r.status, 504, key);
            const body = await r.json();
            assert.equal(body.error.code, 'upstream_first_byte_timeout', key);
            assert.match(body.error.message, /localhost sent no response within 1s/, key);
            assert.ok(Date.now() - started < 1_900, `${key}: answered at the timeout, not when the upstream answered`);
        }
        // The connection the timeout closed is not reused for the next request.
        const r = await proxy('h2', '/items');
        assert.equal(r.status, 200);
    });

    it('refuses an upstream whose certificate does not name its host, with a 502 that says so', async () => {
        const r = await proxy('wrong-name', '/items');
        assert.equal(r.status, 502);
        const body = await r.json();
        assert.equal(body.error.code, 'upstream_tls_error');
        assert.match(body.error.message, /TLS handshake with 127\.0\.0\.1 failed/);
    });
});
