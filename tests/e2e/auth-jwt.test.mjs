// JWT end to end: the end user's key goes to POST /auth/jwt/:key (or POST /connections), the
// gateway signs a token with it, and a loopback API that checks the signatures itself (HS256
// with a hex secret as Ghost does, RS256 and ES256 with public keys) accepts the proxied
// requests. Tokens past their expiry are signed again.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { Nango } from '@nangohq/node';

import { launchBrowser, startAppPage, watchConsole } from '../support/browser.mjs';
import { databases } from '../support/db.mjs';
import { BIN, REPO, startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

const GHOST_ID = '64f0c0ffee0123456789abcd';
const GHOST_SECRET = crypto.randomBytes(32).toString('hex');
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const pkcs8 = (pair) => pair.privateKey.export({ type: 'pkcs8', format: 'pem' });

function catalog(url) {
    return `
ghost-loopback:
    display_name: Ghost on loopback
    categories: [cms]
    auth_mode: JWT
    signature:
        protocol: HMAC
        hmac_secret_encoding: hex
    token:
        signing_key: \${credentials.privateKey.secret}
        expires_in_ms: 300000
        header:
            alg: HS256
            kid: \${credentials.privateKey.id}
        payload:
            aud: /admin/
            jti: \${random}
    proxy:
        base_url: ${url}/ghost/api/admin
        headers:
            authorization: Ghost \${accessToken}
        verification:
            method: GET
            endpoints:
                - /users/?limit=1
    credentials:
        privateKey:
            type: string
            title: Admin API key
            description: The Admin API key of a custom integration
            pattern: '^[a-fA-F0-9]{24}:[a-fA-F0-9]{64}$'
            secret: true
    docs: https://example.com/ghost
rsa-api:
    display_name: RSA API
    categories: [other]
    auth_mode: JWT
    signature:
        protocol: RSA
    token:
        signing_key: \${credentials.privateKey}
        expires_in_ms: 6000
        header:
            alg: RS256
            kid: \${credentials.keyId}
        payload:
            iss: \${credentials.issuer}
            aud: \${connectionConfig.audience}
            jti: \${random}
    proxy:
        base_url: ${url}/rsa
        verification:
            endpoints:
                - /whoami
    connection_config:
        audience:
            type: string
            title: Audience
            description: Who the tokens are for
    credentials:
        privateKey:
            type: string
            title: Private key
            description: PEM
            secret: true
        keyId:
            type: string
            title: Key id
            description: The key's id
        issuer:
            type: string
            title: Issuer
            description: Your account
    docs: https://example.com/rsa
ec-api:
    display_name: EC API
    categories: [other]
    auth_mode: JWT
    signature:
        protocol: EC
    token:
        signing_key: \${credentials.privateKey}
        expires_in_ms: 900000
        header:
            alg: ES256
            typ: JWT
        payload:
            aud: ec-v1
    proxy:
        base_url: ${url}/ec
    credentials:
        privateKey:
            type: string
            title: Private key
            description: PEM
            secret: true
    docs: https://example.com/ec
`;
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** Checks a compact JWT the way each API does; the claims and header when it is valid. */
function check(token, kind) {
    const [h, p, s] = (token || '').split('.');
    if (!s) return null;
    const header = JSON.parse(Buffer.from(h, 'base64url'));
    const claims = JSON.parse(Buffer.from(p, 'base64url'));
    const data = Buffer.from(`${h}.${p}`);
    const sig = Buffer.from(s, 'base64url');
    let valid;
    if (kind === 'ghost') {
        const expected = crypto.createHmac('sha256', Buffer.from(GHOST_SECRET, 'hex')).update(data).digest();
        valid = header.alg === 'HS256' && header.kid === GHOST_ID && claims.aud === '/admin/' && crypto.timingSafeEqual(expected, sig.length === 32 ? sig : Buffer.alloc(32));
    } else if (kind === 'rsa') {
        valid = header.alg === 'RS256' && crypto.verify('sha256', data, rsa.publicKey, sig);
    } else {
        valid = header.alg === 'ES256' && crypto.verify('sha256', data, { key: ec.publicKey, dsaEncoding: 'ieee-p1363' }, sig);
    }
    // Ghost refuses expired tokens; so do the others.
    const fresh = typeof claims.exp === 'number' && claims.exp * 1000 > Date.now() && typeof claims.iat === 'number';
    return valid && fresh ? { header, claims } : null;
}

for (const db of databases()) {
    describe(`JWT credentials on ${db}`, () => {
        let upstream, gateway, nango;

        before(async () => {
            upstream = await startUpstream((req, res) => {
                const auth = req.headers.authorization || '';
                const [kind, token] = req.url.startsWith('/ghost/')
                    ? ['ghost', auth.startsWith('Ghost ') ? auth.slice(6) : null]
                    : [req.url.split('/')[1], auth.startsWith('Bearer ') ? auth.slice(7) : null];
                const seen = check(token, kind);
                res.writeHead(seen ? 200 : 401, { 'content-type': 'application/json' });
                res.end(JSON.stringify(seen ? { ok: true, ...seen } : { errors: [{ message: 'Invalid token' }] }));
            });
            gateway = await startGateway({
                db,
                config: 'catalogs: [jwt.yaml]\nintegrations:\n  ghost:\n    provider: ghost-loopback\n  rsa:\n    provider: rsa-api\n  ec:\n    provider: ec-api\n',
                files: { 'jwt.yaml': catalog(upstream.url) }
            });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        });

        after(async () => {
            await gateway?.stop();
            await upstream?.close();
        });

        const session = async (id) => (await nango.createConnectSession({ end_user: { id } })).data.token;
        const post = async (key, token, body, query = '') =>
            fetch(`${gateway.url}/auth/jwt/${key}?connect_session_token=${token}${query}`, {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify(body)
            });
        const connectionsOf = async (endUserId) => {
            const res = await fetch(`${gateway.url}/connections?endUserId=${endUserId}`, { headers: { authorization: `Bearer ${gateway.secretKey}` } });
            return (await res.json()).connections;
        };

        it('signs an HS256 token from a Ghost Admin API key, verifies it, and the proxy sends it as the template says', async () => {
            const token = await session('u-ghost');
            const res = await post('ghost', token, { type: 'JWT', privateKey: `${GHOST_ID}:${GHOST_SECRET}` });
            assert.equal(res.status, 200, await res.clone().text());
            const { connectionId } = await res.json();
            // The verification call carried a token the API accepted.
            const verification = upstream.requests.find((r) => r.url === '/ghost/api/admin/users/?limit=1');
            assert.ok(verification && check(verification.headers.authorization.slice(6), 'ghost'));

            const connection = await nango.getConnection('ghost', connectionId);
            assert.equal(connection.credentials.type, 'JWT');
            assert.deepEqual(connection.credentials.privateKey, { id: GHOST_ID, secret: GHOST_SECRET }, 'stored as Nango stores it');
            const ttl = Date.parse(connection.credentials.expires_at) - Date.now();
            assert.ok(ttl > 60_000 && ttl <= 300_000, `expires in ${ttl} ms`);
            assert.ok(check(connection.credentials.token, 'ghost'), 'the token GET /connections returns is valid');

            const proxied = await nango.get({ endpoint: '/posts/', providerConfigKey: 'ghost', connectionId });
            assert.equal(proxied.data.ok, true);
            assert.equal(proxied.data.header.kid, GHOST_ID);
            assert.equal(proxied.data.claims.exp - proxied.data.claims.iat, 300);
            // With 2.5 of its 5 minutes left, the token is used again rather than signed per call.
            const again = await nango.get({ endpoint: '/posts/', providerConfigKey: 'ghost', connectionId });
            assert.equal(again.data.claims.jti, proxied.data.claims.jti);
            assert.ok(!gateway.output.includes(GHOST_SECRET), 'the secret is not logged');
        });

        it('takes the key as Nango’s frontend sends it, {id, secret}, and names a malformed one', async () => {
            const token = await session('u-ghost-object');
            let res = await post('ghost', token, { type: 'JWT', privateKey: { id: GHOST_ID, secret: 'zz-not-hex' } });
            assert.equal(res.status, 400);
            let body = await res.json();
            assert.equal(body.error.code, 'invalid_body');
            assert.equal(body.error.message, '`privateKey.secret` is not a hex string');
            assert.deepEqual(body.error.errors[0].path, ['privateKey', 'secret']);

            res = await post('ghost', token, { privateKey: 'not-a-ghost-key' });
            assert.equal(res.status, 400);
            body = await res.json();
            assert.match(body.error.message, /Admin API key does not have the expected form/);
            assert.deepEqual(body.error.errors[0].path, ['privateKey']);

            res = await post('ghost', token, { type: 'JWT', privateKey: { id: GHOST_ID, secret: GHOST_SECRET } });
            assert.equal(res.status, 200);
            const { connectionId } = await res.json();
            const proxied = await nango.get({ endpoint: '/posts/', providerConfigKey: 'ghost', connectionId });
            assert.equal(proxied.data.ok, true);
            assert.equal((await connectionsOf('u-ghost-object')).length, 1);
        });

        it('refuses a key the API does not accept and stores nothing', async () => {
            const token = await session('u-ghost-wrong');
            const wrong = crypto.randomBytes(32).toString('hex');
            const res = await post('ghost', token, { type: 'JWT', privateKey: `${GHOST_ID}:${wrong}` });
            assert.equal(res.status, 400);
            const body = await res.json();
            assert.equal(body.error.code, 'connection_test_failed');
            assert.match(body.error.message, /not accepted by Ghost on loopback: the provider answered 401/);
            assert.ok(!body.error.message.includes(wrong));
            assert.deepEqual(await connectionsOf('u-ghost-wrong'), []);
        });

        it('signs RS256 tokens with the connection config in the claims, and signs again once one expired', async () => {
            const token = await session('u-rsa');
            let res = await post('rsa', token, { privateKey: '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----', keyId: 'k1', issuer: 'acct-7' }, '&params[audience]=rsa-v2');
            assert.equal(res.status, 400);
            let body = await res.json();
            assert.equal(body.error.message, '`privateKey` is not an RSA private key in PEM');
            assert.deepEqual(body.error.errors[0].path, ['privateKey']);
            assert.deepEqual(await connectionsOf('u-rsa'), []);

            // Pasted into a one-line field, the key loses its line breaks.
            const oneLine = pkcs8(rsa).replace(/\n/g, ' ');
            res = await post('rsa', token, { privateKey: oneLine, keyId: 'k1', issuer: 'acct-7' }, '&params[audience]=rsa-v2');
            assert.equal(res.status, 200, await res.clone().text());
            const { connectionId } = await res.json();

            const first = (await nango.get({ endpoint: '/whoami', providerConfigKey: 'rsa', connectionId })).data;
            assert.equal(first.ok, true);
            assert.equal(first.header.kid, 'k1');
            assert.equal(first.claims.iss, 'acct-7');
            assert.equal(first.claims.aud, 'rsa-v2');
            // Wait (no timing asserted) until that token has expired, then use the connection again.
            while (Date.now() <= first.claims.exp * 1000) await new Promise((r) => setTimeout(r, 250));
            const second = (await nango.get({ endpoint: '/whoami', providerConfigKey: 'rsa', connectionId })).data;
            assert.equal(second.ok, true, 'the API accepted the new token');
            assert.ok(second.claims.iat >= first.claims.exp, `new iat ${second.claims.iat} after the old exp ${first.claims.exp}`);
            assert.ok(second.claims.exp > first.claims.exp);
            assert.notEqual(second.claims.jti, first.claims.jti);
            const stored = await nango.getConnection('rsa', connectionId);
            assert.ok(check(stored.credentials.token, 'rsa'), 'the stored token is the valid new one');
        });

        it('imports JWT credentials through POST /connections and signs their token', async () => {
            let res = await fetch(`${gateway.url}/connections`, {
                method: 'POST',
                headers: { authorization: `Bearer ${gateway.secretKey}`, 'content-type': 'application/json' },
                body: JSON.stringify({ provider_config_key: 'ec', connection_id: 'ec-bad', credentials: { type: 'JWT', privateKey: pkcs8(rsa) } })
            });
            assert.equal(res.status, 400);
            let body = await res.json();
            assert.match(body.error.message, /`privateKey` is not an EC private key/);
            assert.deepEqual(body.error.errors[0].path, ['credentials', 'privateKey']);

            res = await fetch(`${gateway.url}/connections`, {
                method: 'POST',
                headers: { authorization: `Bearer ${gateway.secretKey}`, 'content-type': 'application/json' },
                body: JSON.stringify({ provider_config_key: 'ec', connection_id: 'ec-1', credentials: { type: 'JWT', privateKey: pkcs8(ec) } })
            });
            assert.equal(res.status, 201, await res.clone().text());
            body = await res.json();
            assert.equal(body.credentials.type, 'JWT');
            assert.ok(check(body.credentials.token, 'ec'));
            const proxied = await nango.get({ endpoint: '/things', providerConfigKey: 'ec', connectionId: 'ec-1' });
            assert.equal(proxied.data.ok, true);
            assert.equal(proxied.data.claims.aud, 'ec-v1');

            res = await fetch(`${gateway.url}/connections`, {
                method: 'POST',
                headers: { authorization: `Bearer ${gateway.secretKey}`, 'content-type': 'application/json' },
                body: JSON.stringify({ provider_config_key: 'ghost', connection_id: 'ghost-imported', credentials: { type: 'JWT', privateKey: { id: GHOST_ID, secret: GHOST_SECRET } } })
            });
            assert.equal(res.status, 201);
            const ghost = await nango.get({ endpoint: '/posts/', providerConfigKey: 'ghost', connectionId: 'ghost-imported' });
            assert.equal(ghost.data.ok, true);
        });
    });
}

it('`latchkey check` accepts integrations of the catalog’s JWT provider without a warning', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'latchkey-jwt-check-'));
    try {
        const config = path.join(dir, 'nango.yaml');
        await fs.writeFile(config, 'integrations:\n  ghost:\n    provider: ghost-admin\n');
        const { stdout } = await promisify(execFile)(BIN, ['check', '--config', config, '--catalog-dir', path.join(REPO, 'providers')]);
        assert.match(stdout, /: ok/);
        assert.ok(!/warning/.test(stdout), stdout);
    } finally {
        await fs.rm(dir, { recursive: true, force: true });
    }
});

describe('JWT from the Connect UI in Chromium', () => {
    let upstream, gateway, nango, app, browser;

    before(async () => {
        upstream = await startUpstream((req, res) => {
            const auth = req.headers.authorization || '';
            const seen = check(auth.startsWith('Ghost ') ? auth.slice(6) : null, 'ghost');
            res.writeHead(seen ? 200 : 401, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ ok: Boolean(seen) }));
        });
        gateway = await startGateway({
            config: 'catalogs: [jwt.yaml]\nintegrations:\n  ghost:\n    provider: ghost-loopback\n',
            files: { 'jwt.yaml': catalog(upstream.url) }
        });
        nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        app = await startAppPage();
        browser = await launchBrowser();
    });

    after(async () => {
        await browser?.close();
        await app?.close();
        await gateway?.stop();
        await upstream?.close();
    });

    it('renders the key field, sends it, and the connection works', async () => {
        const token = (await nango.createConnectSession({ end_user: { id: 'ui-ghost' }, allowed_integrations: ['ghost'] })).data.token;
        const context = await browser.newContext();
        const page = await context.newPage();
        const errors = watchConsole(page);
        await page.goto(app.url);
        await page.waitForFunction(() => window.sdkReady === true);
        await page.evaluate(
            ({ base, api, token }) => {
                const nango = new window.Nango({ host: api, connectSessionToken: token });
                window.ui = nango.openConnectUI({ baseURL: base, apiURL: api, onEvent: (e) => window.events.push(e) });
                window.ui.setSessionToken(token);
            },
            { base: `${gateway.url}/connect`, api: gateway.url, token }
        );
        const frame = page.frameLocator('#connect-ui');
        const key = frame.locator('input[name="privateKey"]');
        await key.waitFor({ timeout: 30_000 });
        assert.equal(await key.getAttribute('type'), 'password');
        await key.fill(`${GHOST_ID}:${GHOST_SECRET}`);
        await key.press('Enter');
        await frame.locator('#finish').waitFor({ timeout: 30_000 });
        const done = (await page.evaluate(() => window.events)).find((e) => e.type === 'connect');
        const proxied = await nango.get({ endpoint: '/posts/', providerConfigKey: 'ghost', connectionId: done.payload.connectionId });
        assert.equal(proxied.data.ok, true);
        assert.deepEqual(errors, []);
        await context.close();
    });
});
