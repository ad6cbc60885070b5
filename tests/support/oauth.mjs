// OAuth 2 peers on loopback: a real OpenID Connect server (oidc-provider, from npm) and a small
// provider of our own that misbehaves on request (denied consent, invalid_grant, slow or
// malformed token responses). Plus a driver that walks a popup flow over plain HTTP, and the
// WebSocket client side of the frontend SDK's protocol.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';
import WebSocket from 'ws';

export const OIDC_CLIENT = { id: 'latchkey-test-client', secret: 'latchkey-test-secret-0123456789abcdef' };
export const OIDC_USER = { login: 'alice', password: 'any' };

/**
 * Starts oidc-provider on `port` with one confidential client that may redirect to
 * `redirectUri`. PKCE (S256) is required, as it is for public OAuth 2.1 servers.
 */
export async function startOidcProvider({ port, redirectUri }) {
    const issuer = `http://127.0.0.1:${port}`;
    const oidc = new Provider(issuer, {
        clients: [
            {
                client_id: OIDC_CLIENT.id,
                client_secret: OIDC_CLIENT.secret,
                redirect_uris: [redirectUri],
                grant_types: ['authorization_code', 'refresh_token'],
                response_types: ['code'],
                token_endpoint_auth_method: 'client_secret_post'
            }
        ],
        pkce: { required: () => true },
        scopes: ['openid', 'offline_access', 'profile'],
        claims: { openid: ['sub'], profile: ['name'] },
        findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id, name: `User ${id}` }) }),
        features: { devInteractions: { enabled: true } },
        // The token the tests check at the userinfo endpoint through the proxy must be opaque.
        ttl: { AccessToken: 3600, Session: 3600, Interaction: 3600, Grant: 3600 }
    });
    oidc.proxy = false;
    const server = http.createServer(oidc.callback());
    server.keepAliveTimeout = 120_000;
    await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
    return {
        issuer,
        close: () =>
            new Promise((resolve) => {
                server.closeAllConnections();
                server.close(resolve);
            })
    };
}

/**
 * A provider of our own whose behaviour the test sets through `fake.mode`:
 * - 'ok': consent given, the token endpoint answers with tokens;
 * - 'deny': the user refuses consent (error=access_denied on the redirect);
 * - 'invalid_grant': the token endpoint refuses the code;
 * - 'slow': the token endpoint answers after `fake.delayMs`;
 * - 'malformed': the token endpoint answers 200 with HTML.
 */
export async function startFakeProvider() {
    const fake = { mode: 'ok', delayMs: 1500, tokenRequests: [], authorizeRequests: [] };
    const server = http.createServer(async (req, res) => {
        const url = new URL(req.url, 'http://x');
        if (url.pathname === '/authorize') {
            fake.authorizeRequests.push(url);
            const back = new URL(url.searchParams.get('redirect_uri'));
            back.searchParams.set('state', url.searchParams.get('state'));
            if (fake.mode === 'deny') {
                back.searchParams.set('error', 'access_denied');
                back.searchParams.set('error_description', 'The user said no <b>thanks</b>');
            } else {
                back.searchParams.set('code', `code-${fake.authorizeRequests.length}`);
                back.searchParams.set('realm', 'realm-42');
            }
            res.writeHead(302, { location: back.toString() });
            res.end();
            return;
        }
        if (url.pathname === '/token') {
            const chunks = [];
            for await (const c of req) chunks.push(c);
            const body = new URLSearchParams(Buffer.concat(chunks).toString());
            fake.tokenRequests.push({ headers: req.headers, body });
            if (fake.mode === 'invalid_grant') {
                res.writeHead(400, { 'content-type': 'application/json' });
                res.end(JSON.stringify({ error: 'invalid_grant', error_description: 'The code has expired (fake)' }));
                return;
            }
            if (fake.mode === 'malformed') {
                res.writeHead(200, { 'content-type': 'text/html' });
                res.end('<html><body>Welcome!</body></html>');
                return;
            }
            if (fake.mode === 'slow') await new Promise((r) => setTimeout(r, fake.delayMs));
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(
                JSON.stringify({
                    access_token: `fake-access-${fake.tokenRequests.length}`,
                    refresh_token: 'fake-refresh',
                    expires_in: 3600,
                    token_type: 'Bearer',
                    instance: { api_domain: 'api.fake.test' }
                })
            );
            return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ url: req.url, authorization: req.headers.authorization ?? null }));
    });
    // Longer than the gateway's idle pooled connections live: Node's default of 5 s lets a
    // pooled connection close just as the gateway reuses it, which fails a request by chance.
    server.keepAliveTimeout = 120_000;
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    fake.url = `http://127.0.0.1:${server.address().port}`;
    fake.close = () =>
        new Promise((resolve) => {
            server.closeAllConnections();
            server.close(resolve);
        });
    return fake;
}

/** Opens the frontend SDK's WebSocket on `/`; resolves once the gateway acknowledged it. */
export async function openFrontendSocket(gatewayUrl) {
    const socket = new WebSocket(gatewayUrl.replace(/^http/, 'ws') + '/');
    const messages = [];
    let wake = () => {};
    socket.on('message', (data) => {
        messages.push(JSON.parse(data.toString()));
        wake();
    });
    const next = async (deadlineMs = 30_000) => {
        const deadline = Date.now() + deadlineMs;
        while (messages.length === 0) {
            if (Date.now() > deadline) throw new Error('no WebSocket message in time');
            await new Promise((r) => {
                wake = r;
                setTimeout(r, 200);
            });
        }
        return messages.shift();
    };
    const ack = await next();
    if (ack.message_type !== 'connection_ack') throw new Error(`expected connection_ack, got ${JSON.stringify(ack)}`);
    return { wsClientId: ack.ws_client_id, next, close: () => socket.close() };
}

/**
 * Follows a popup's redirects over HTTP with a cookie jar per host, filling in oidc-provider's
 * login and consent forms on the way. Resolves to the last response `{ status, url, text }`.
 */
export async function walkPopup(startUrl, { login = OIDC_USER } = {}) {
    const jar = new Map();
    const cookieHeader = (url) => [...(jar.get(new URL(url).host) || new Map())].map(([k, v]) => `${k}=${v}`).join('; ');
    const remember = (url, res) => {
        const host = new URL(url).host;
        const cookies = jar.get(host) || new Map();
        for (const line of res.headers.getSetCookie()) {
            const [pair] = line.split(';');
            const i = pair.indexOf('=');
            cookies.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
        }
        jar.set(host, cookies);
    };
    let url = startUrl;
    let init = { method: 'GET' };
    for (let hop = 0; hop < 30; hop++) {
        const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers || {}), cookie: cookieHeader(url) } });
        remember(url, res);
        if (res.status >= 300 && res.status < 400) {
            url = new URL(res.headers.get('location'), url).toString();
            init = { method: 'GET' };
            continue;
        }
        const text = await res.text();
        const form = /<form[^>]*action="([^"]+)"[^>]*method="post"/i.exec(text) || /<form[^>]*method="post"[^>]*action="([^"]+)"/i.exec(text);
        if (res.status === 200 && form && /\/interaction\//.test(form[1])) {
            const action = new URL(form[1].replace(/&amp;/g, '&'), url).toString();
            const fields = new URLSearchParams();
            if (/name="login"/.test(text)) {
                fields.set('login', login.login);
                fields.set('password', login.password);
            }
            for (const m of text.matchAll(/<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)) fields.set(m[1], m[2]);
            url = action;
            init = { method: 'POST', body: fields.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } };
            continue;
        }
        return { status: res.status, url, text };
    }
    throw new Error('too many redirects');
}

/** RFC 3986 encoding, as OAuth 1 signs with it. */
function enc(text) {
    return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Checks the OAuth 1.0a HMAC-SHA1 signature of a request with an implementation independent of
 * the gateway's; resolves to the request's oauth parameters, or null when it does not verify.
 */
function verifyOAuth1(req, url, body, consumerSecret, tokenSecret, publicKey) {
    const header = req.headers.authorization || '';
    if (!header.startsWith('OAuth ')) return null;
    const oauth = Object.fromEntries(
        [...header.slice(6).matchAll(/([a-z_]+)="([^"]*)"/g)].map((m) => [decodeURIComponent(m[1]), decodeURIComponent(m[2])])
    );
    if (oauth.oauth_signature_method !== (publicKey ? 'RSA-SHA1' : 'HMAC-SHA1')) return null;
    const params = Object.entries(oauth).filter(([k]) => k !== 'oauth_signature');
    for (const [k, v] of url.searchParams) params.push([k, v]);
    if ((req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')) {
        for (const [k, v] of new URLSearchParams(body)) params.push([k, v]);
    }
    const normalized = params
        .map(([k, v]) => [enc(k), enc(v)])
        .sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : 1) : a[0] < b[0] ? -1 : 1))
        .map(([k, v]) => `${k}=${v}`)
        .join('&');
    const base = [req.method.toUpperCase(), enc(`http://${req.headers.host}${url.pathname}`), enc(normalized)].join('&');
    if (publicKey) {
        return crypto.verify('RSA-SHA1', Buffer.from(base), publicKey, Buffer.from(oauth.oauth_signature, 'base64')) ? oauth : null;
    }
    const expected = crypto.createHmac('sha1', `${enc(consumerSecret)}&${enc(tokenSecret)}`).update(base).digest('base64');
    return expected === oauth.oauth_signature ? oauth : null;
}

/**
 * A three-legged OAuth 1.0a provider that checks every signature it receives: HMAC-SHA1, or
 * RSA-SHA1 with the consumer's `publicKey` when one is given.
 */
export async function startFakeOAuth1Provider({ consumerKey, consumerSecret, publicKey }) {
    const fake = { requests: [] };
    const requestTokens = new Map();
    const accessTokens = new Map();
    let n = 0;
    const server = http.createServer(async (req, res) => {
        const url = new URL(req.url, 'http://x');
        const chunks = [];
        for await (const c of req) chunks.push(c);
        const body = Buffer.concat(chunks).toString();
        const reply = (status, text, type = 'application/x-www-form-urlencoded') => {
            res.writeHead(status, { 'content-type': type });
            res.end(text);
        };
        fake.requests.push({ method: req.method, url: req.url, authorization: req.headers.authorization });
        if (url.pathname === '/request_token') {
            const oauth = verifyOAuth1(req, url, body, consumerSecret, '', publicKey);
            if (!oauth || oauth.oauth_consumer_key !== consumerKey || !oauth.oauth_callback) return reply(401, 'oauth_problem=signature_invalid');
            n += 1;
            requestTokens.set(`req-${n}`, { secret: `reqsecret-${n}`, callback: oauth.oauth_callback });
            return reply(200, `oauth_token=req-${n}&oauth_token_secret=reqsecret-${n}&oauth_callback_confirmed=true`);
        }
        if (url.pathname === '/authorize') {
            const token = url.searchParams.get('oauth_token');
            const pending = requestTokens.get(token);
            if (!pending) return reply(400, 'unknown token', 'text/plain');
            const back = new URL(pending.callback);
            back.searchParams.set('oauth_token', token);
            back.searchParams.set('oauth_verifier', `verifier-${token}`);
            res.writeHead(302, { location: back.toString() });
            return res.end();
        }
        if (url.pathname === '/access_token') {
            const token = /oauth_token="([^"]*)"/.exec(req.headers.authorization || '')?.[1];
            const pending = requestTokens.get(decodeURIComponent(token || ''));
            const oauth = pending && verifyOAuth1(req, url, body, consumerSecret, pending.secret, publicKey);
            if (!oauth || oauth.oauth_verifier !== `verifier-${oauth.oauth_token}`) return reply(401, 'oauth_problem=signature_invalid');
            requestTokens.delete(oauth.oauth_token);
            accessTokens.set(`acc-${n}`, `accsecret-${n}`);
            return reply(200, `oauth_token=acc-${n}&oauth_token_secret=accsecret-${n}&user_id=42`);
        }
        const token = decodeURIComponent(/oauth_token="([^"]*)"/.exec(req.headers.authorization || '')?.[1] || '');
        const oauth = accessTokens.has(token) && verifyOAuth1(req, url, body, consumerSecret, accessTokens.get(token), publicKey);
        return reply(oauth ? 200 : 401, JSON.stringify({ verified: Boolean(oauth), token, path: url.pathname }), 'application/json');
    });
    // Longer than the gateway's idle pooled connections live: Node's default of 5 s lets a
    // pooled connection close just as the gateway reuses it, which fails a request by chance.
    server.keepAliveTimeout = 120_000;
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    fake.url = `http://127.0.0.1:${server.address().port}`;
    fake.close = () =>
        new Promise((resolve) => {
            server.closeAllConnections();
            server.close(resolve);
        });
    return fake;
}
