// Known secrets go through the proxy on every path it has (success, upstream errors, retries,
// renewal after a 401, timeouts, unreachable upstreams, refusals, secrets the caller put in the
// path and query), with debug logging on; then every output is searched for them: the gateway's
// stdout and stderr, every GET /logs entry, and every answer the gateway wrote itself.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { databases } from '../support/db.mjs';
import { freePort, startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

const CLIENT_SECRET = 'cs_SECRET_client_9f8e7d6c';
const ACCESS_TOKEN = 'at_SECRET_access_1a2b3c4d';
const REFRESH_TOKEN = 'rt_SECRET_refresh_5e6f7a8b';
const API_KEY = 'ak_SECRET_apikey_0c9d8e7f';
const WRONG_KEY = 'wk_SECRET_wrongkey_3344';

for (const db of databases()) {
    describe(`no secret in any output on ${db}`, () => {
        let upstream, gateway;
        const gatewayAnswers = [];
        let resetNext = false;

        before(async () => {
            // The upstream never repeats what it received: whatever it answers is the gateway's.
            upstream = await startUpstream(async (req, res) => {
                const path = req.url.split('?')[0];
                if (resetNext && path === '/reset') {
                    resetNext = false;
                    req.socket.destroy();
                    return;
                }
                if (path === '/silent') return;
                const status = { '/unauthorized': 401, '/broken': 500 }[path] || 200;
                res.writeHead(status, { 'content-type': 'text/plain', 'retry-after': '0' });
                res.end(`status ${status}`);
            });
            gateway = await startGateway({
                db,
                env: { LATCHKEY_LOG: 'debug' },
                config: [
                    'catalogs: [test-catalog.yaml]',
                    'proxy:',
                    '  read_timeout: 1s',
                    'integrations:',
                    '  oauth:',
                    '    provider: secret-oauth',
                    '    client_id: the-client',
                    '    client_secret: ${file:client-secret.txt}',
                    '  keyed:',
                    '    provider: secret-apikey',
                    '    allow_base_url_override: true'
                ].join('\n'),
                files: {
                    'client-secret.txt': CLIENT_SECRET,
                    'test-catalog.yaml': `
secret-oauth:
    display_name: OAuth with secrets
    categories: [other]
    auth_mode: OAUTH2
    authorization_url: ${upstream.url}/oauth/authorize
    token_url: ${upstream.url}/oauth/token
    proxy:
        base_url: ${upstream.url}
        headers:
            x-client-secret: \${clientSecret}
    docs: https://example.com/acme
secret-apikey:
    display_name: API key in the URL
    categories: [other]
    auth_mode: API_KEY
    proxy:
        base_url: ${upstream.url}/keys/\${apiKey}
        query:
            key: \${apiKey}
    docs: https://example.com/acme
`
                }
            });
            for (const [key, credentials] of [
                ['oauth', { type: 'OAUTH2', access_token: ACCESS_TOKEN, refresh_token: REFRESH_TOKEN }],
                ['keyed', { type: 'API_KEY', apiKey: API_KEY }]
            ]) {
                const r = await gateway.fetch('/connections', {
                    method: 'POST',
                    headers: { 'content-type': 'application/json' },
                    body: JSON.stringify({ provider_config_key: key, connection_id: 'alice', credentials })
                });
                assert.ok(r.ok, await r.text());
            }
        });

        after(async () => {
            await gateway?.stop();
            await upstream?.close();
        });

        async function call(key, path, headers = {}, bearer = gateway.secretKey) {
            const r = await fetch(`${gateway.url}/proxy${path}`, {
                headers: { authorization: `Bearer ${bearer}`, 'provider-config-key': key, 'connection-id': 'alice', ...headers }
            });
            const body = await r.text();
            if (r.headers.get('content-type') === 'application/json') gatewayAnswers.push(body);
            return r.status;
        }

        it('proxies on every path', async () => {
            assert.equal(await call('oauth', '/ok'), 200);
            assert.equal(upstream.requests.at(-1).headers.authorization, `Bearer ${ACCESS_TOKEN}`, 'the token was injected');
            assert.equal(upstream.requests.at(-1).headers['x-client-secret'], CLIENT_SECRET);
            assert.equal(await call('oauth', '/unauthorized'), 401);
            assert.equal(await call('oauth', '/broken', { retries: '1' }), 500);
            resetNext = true;
            assert.equal(await call('oauth', '/reset', { retries: '1' }), 200);
            assert.equal(await call('oauth', '/silent'), 504);
            assert.equal(await call('keyed', `/items/${API_KEY}?echo=${API_KEY}`), 200);
            assert.ok(upstream.requests.at(-1).url.includes(`key=${API_KEY}`), 'the key was injected');
            const closed = await freePort();
            assert.equal(await call('keyed', '/x', { 'base-url-override': `http://127.0.0.1:${closed}/${API_KEY}` }), 502);
            assert.equal(await call('oauth', '/ok', { 'nango-proxy-authorization': `Bearer ${ACCESS_TOKEN}` }), 200);
            assert.equal(await call('oauth', '/ok', {}, WRONG_KEY), 401);
            assert.equal(await call('oauth', '/ok', { retries: 'x' }), 400);
            assert.equal(await call('nope', `/ok?token=${ACCESS_TOKEN}`), 404);
        });

        it('and no output holds a secret', async () => {
            const entries = [];
            let cursor = null;
            const deadline = Date.now() + 20_000;
            // Wait until the writer has caught up with the last request, then read every page.
            for (;;) {
                const r = await gateway.fetch('/logs?integration=nope');
                if ((await r.json()).logs.length > 0) break;
                assert.ok(Date.now() < deadline, 'the last entry was written');
                await new Promise((resolve) => setTimeout(resolve, 100));
            }
            do {
                const r = await gateway.fetch(`/logs?limit=5${cursor ? `&cursor=${cursor}` : ''}`);
                const body = await r.json();
                entries.push(...body.logs);
                cursor = body.next_cursor;
            } while (cursor);
            assert.ok(entries.length >= 11, `${entries.length} entries`);
            assert.ok(entries.some((e) => e.path === '/items/REDACTED'), 'a key the caller wrote into the path is redacted');
            assert.ok(gatewayAnswers.length >= 5, `${gatewayAnswers.length} answers of the gateway`);

            const outputs = {
                'gateway stdout and stderr': gateway.output,
                'GET /logs': JSON.stringify(entries),
                "the gateway's own answers": gatewayAnswers.join('\n')
            };
            assert.match(gateway.output, /DEBUG/, 'debug logging was on');
            for (const [name, text] of Object.entries(outputs)) {
                for (const secret of [CLIENT_SECRET, ACCESS_TOKEN, REFRESH_TOKEN, API_KEY, WRONG_KEY, gateway.secretKey]) {
                    assert.ok(!text.includes(secret), `${name} holds ${secret.slice(0, 12)}…`);
                }
                assert.ok(!/authorization:\s*(bearer|basic)/i.test(text), `${name} holds an Authorization header`);
            }
        });
    });
}
