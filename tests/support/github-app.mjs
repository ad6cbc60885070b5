// A GitHub of our own on loopback for the GitHub App (APP) install flow: the app's install page,
// the installation access_tokens endpoint (which checks the RS256 app JWT with Node's crypto),
// and an API that takes only the tokens it minted.
import crypto from 'node:crypto';

import { startUpstream } from './upstream.mjs';

export const APP_ID = '12345';
const APP_KEY = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
export const APP_KEY_PEM = APP_KEY.privateKey.export({ type: 'pkcs1', format: 'pem' });

/** Whether `jwt` is an RS256 token issued by app APP_ID, signed with APP_KEY, not expired. */
export function validAppJwt(jwt) {
    const [header, payload, signature] = (jwt || '').split('.');
    if (!signature) return false;
    const signed = crypto.verify('RSA-SHA256', Buffer.from(`${header}.${payload}`), APP_KEY.publicKey, Buffer.from(signature, 'base64url'));
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    const alg = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')).alg;
    return signed && alg === 'RS256' && claims.iss === APP_ID && claims.exp > Date.now() / 1000 && claims.exp - claims.iat <= 600;
}

/**
 * GitHub on loopback. `/apps/latchkey-test/installations/new` is the app's install page: a link
 * back to `state.callbackUrl` with the installation (as GitHub redirects after the user clicks
 * Install); `state.answer` scripts it. The access_tokens endpoint mints `ghs-<n>` for
 * installation 777 only; `/api/*` takes only tokens it minted.
 */
export async function startGithubApp() {
    const state = { callbackUrl: null, answer: 'install', issued: new Set(), tokenCalls: [], count: 0 };
    const github = await startUpstream((req, res) => {
        const url = new URL(req.url, 'http://x');
        const json = (status, body) => {
            res.writeHead(status, { 'content-type': 'application/json' });
            res.end(JSON.stringify(body));
        };
        if (url.pathname === '/apps/latchkey-test/installations/new') {
            const back = new URL(state.callbackUrl);
            if (state.answer === 'request') back.searchParams.set('setup_action', 'request');
            else {
                back.searchParams.set('installation_id', state.answer === 'unknown' ? '999' : '777');
                back.searchParams.set('setup_action', 'install');
            }
            back.searchParams.set('state', url.searchParams.get('state'));
            res.writeHead(200, { 'content-type': 'text/html' });
            res.end(`<!doctype html><title>Install Latchkey Test</title><a id="install" href="${back}">Install</a>`);
            return;
        }
        const installation = url.pathname.match(/^\/app\/installations\/(\d+)\/access_tokens$/);
        if (installation && req.method === 'POST') {
            state.tokenCalls.push(installation[1]);
            if (!validAppJwt((req.headers.authorization || '').replace(/^Bearer /, ''))) return json(401, { message: 'A JSON web token could not be decoded' });
            if (installation[1] !== '777') return json(404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
            const token = `ghs-${++state.count}`;
            state.issued.add(token);
            return json(201, { token, expires_at: new Date(Date.now() + 3600_000).toISOString(), permissions: { issues: 'read' } });
        }
        if (url.pathname.startsWith('/api/')) {
            const token = (req.headers.authorization || '').replace(/^Bearer /, '');
            return state.issued.has(token) ? json(200, { token, path: url.pathname }) : json(401, { message: 'Bad credentials' });
        }
        return json(404, { message: 'Not Found' });
    });
    /** The href of the install page's Install link, as the user would follow it. */
    state.installLink = (html) => /href="([^"]+)"/.exec(html)[1].replace(/&amp;/g, '&');
    return { ...github, state };
}

/** A provider shaped like `github-app`, its URLs on `url`. */
export function githubAppCatalog(url) {
    return `
github-app-loopback:
    display_name: GitHub App (loopback)
    categories: [dev-tools]
    auth_mode: APP
    authorization_url: \${connectionConfig.appPublicLink}/installations/new
    token_url: ${url}/app/installations/\${connectionConfig.installation_id}/access_tokens
    proxy:
        base_url: ${url}/api
    docs: https://example.com/github-app
`;
}

/** The integrations of the app: with its key and public page, and without a public page. */
export function githubAppIntegrations(url) {
    return `  gh-app:
    provider: github-app-loopback
    app_id: '${APP_ID}'
    app_link: ${url}/apps/latchkey-test
    private_key: \${file:app.pem}
  gh-app-no-link:
    provider: github-app-loopback
    app_id: '${APP_ID}'
    private_key: \${file:app.pem}
`;
}

export const APP_FILES = { 'app.pem': APP_KEY_PEM };
