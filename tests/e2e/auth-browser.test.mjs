// The unmodified @nangohq/frontend package in a real headless Chromium against Latchkey:
// `nango.auth()` with its popup and WebSocket through a real OpenID Connect server and through a
// GitHub App's install page (a GitHub of our own on loopback), and
// `nango.openConnectUI()` with Latchkey's own Connect UI, driven by keyboard, with screenshots
// checked and no console errors.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { verifyingCatalog } from '../support/auth-catalog.mjs';
import { consentInPopup, launchBrowser, pngSize, startAppPage, watchConsole } from '../support/browser.mjs';
import { freePort, startGateway } from '../support/gateway.mjs';
import { APP_FILES, githubAppCatalog, githubAppIntegrations, startGithubApp } from '../support/github-app.mjs';
import { OIDC_CLIENT, OIDC_USER, startOidcProvider } from '../support/oauth.mjs';
import { startUpstream } from '../support/upstream.mjs';

const SHOTS = process.env.LATCHKEY_SCREENSHOTS || path.join(os.tmpdir(), 'latchkey-connect-ui');

describe('@nangohq/frontend in Chromium', () => {
    let oidc, upstream, github, gateway, nango, app, browser;

    before(async () => {
        const oidcPort = await freePort();
        upstream = await startUpstream((req, res, body) => {
            if (req.url === '/login') {
                const sent = JSON.parse(body.toString() || '{}');
                const ok = sent.user === 'carol' && sent.pass === 'hunter2-hunter2';
                res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
                res.end(JSON.stringify(ok ? { token: 'carol-token' } : { message: 'Unknown user' }));
                return;
            }
            const ok = req.headers.authorization === 'Bearer good-key' || req.headers.authorization === 'Bearer carol-token';
            res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ ok }));
        });
        const issuer = `http://127.0.0.1:${oidcPort}`;
        github = await startGithubApp();
        gateway = await startGateway({
            config: `catalogs: [catalog.yaml]
connect_ui:
  logo_url: data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/%3E
  default_theme: light
  theme:
    light:
      primary: '#7c3aed'
integrations:
  oidc:
    provider: local-oidc
    client_id: ${OIDC_CLIENT.id}
    client_secret: \${env:OIDC_SECRET}
    scopes: [openid, offline_access]
  apikey-prod:
    provider: verify-apikey
  login-prod:
    provider: login-two-step
${githubAppIntegrations(github.url)}`,
            env: { OIDC_SECRET: OIDC_CLIENT.secret },
            files: {
                ...APP_FILES,
                'catalog.yaml': `${verifyingCatalog(upstream.url)}${githubAppCatalog(github.url)}
local-oidc:
    display_name: Local OIDC
    categories: [other]
    auth_mode: OAUTH2
    authorization_url: ${issuer}/auth
    token_url: ${issuer}/token
    authorization_params:
        prompt: consent
    proxy:
        base_url: ${issuer}
    docs: https://example.com/oidc
login-two-step:
    display_name: Login (two step)
    categories: [other]
    auth_mode: TWO_STEP
    token_url: ${upstream.url}/login
    token_params:
        user: \${credentials.user}
        pass: \${credentials.pass}
    token_response:
        token: token
    proxy:
        base_url: ${upstream.url}/api
    credentials:
        user:
            type: string
            title: User name
            description: Your user name
        pass:
            type: string
            title: Password
            description: Your password
            secret: true
    docs: https://example.com/login
`
            }
        });
        oidc = await startOidcProvider({ port: oidcPort, redirectUri: `${gateway.url}/oauth/callback` });
        github.state.callbackUrl = `${gateway.url}/app-auth/connect`;
        nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        app = await startAppPage();
        browser = await launchBrowser();
        await fs.mkdir(SHOTS, { recursive: true });
    });

    after(async () => {
        await browser?.close();
        await app?.close();
        await gateway?.stop();
        await oidc?.close();
        await github?.close();
        await upstream?.close();
    });

    const sessionToken = async (allowed) =>
        (await nango.createConnectSession({ end_user: { id: 'browser-user' }, allowed_integrations: allowed })).data.token;

    async function openApp() {
        const context = await browser.newContext();
        const page = await context.newPage();
        const errors = watchConsole(page);
        await page.goto(app.url);
        await page.waitForFunction(() => window.sdkReady === true);
        return { context, page, errors };
    }

    it('nango.auth() opens the popup, the user consents, and the promise resolves', async () => {
        const token = await sessionToken(['oidc']);
        const { context, page, errors } = await openApp();
        await page.evaluate(
            ({ host, token }) => {
                document.getElementById('connect').onclick = () => {
                    const nango = new window.Nango({ host, connectSessionToken: token });
                    window.result = nango.auth('oidc').then(
                        (ok) => ({ ok }),
                        (error) => ({ error: { message: error.message, type: error.type } })
                    );
                };
            },
            { host: gateway.url, token }
        );
        const [popup] = await Promise.all([context.waitForEvent('page'), page.click('#connect')]);
        await consentInPopup(popup, OIDC_USER);
        const result = await page.evaluate(() => window.result);
        assert.ok(result.ok, JSON.stringify(result));
        assert.equal(result.ok.providerConfigKey, 'oidc');
        assert.equal(result.ok.isPending, false);

        const connection = await nango.getConnection('oidc', result.ok.connectionId);
        assert.equal(connection.end_user.id, 'browser-user');
        const me = await nango.get({ endpoint: '/me', providerConfigKey: 'oidc', connectionId: result.ok.connectionId });
        assert.equal(me.data.sub, OIDC_USER.login);
        assert.deepEqual(errors, []);
        await context.close();
    });

    it('nango.auth() installs a GitHub App in the popup and the promise resolves', async () => {
        const token = await sessionToken(['gh-app']);
        const { context, page, errors } = await openApp();
        await page.evaluate(
            ({ host, token }) => {
                document.getElementById('connect').onclick = () => {
                    const nango = new window.Nango({ host, connectSessionToken: token });
                    window.result = nango.auth('gh-app').then(
                        (ok) => ({ ok }),
                        (error) => ({ error: { message: error.message, type: error.type } })
                    );
                };
            },
            { host: gateway.url, token }
        );
        const [popup] = await Promise.all([context.waitForEvent('page'), page.click('#connect')]);
        await popup.waitForSelector('#install', { timeout: 60_000 });
        assert.equal(await popup.title(), 'Install Latchkey Test');
        await popup.click('#install');
        const result = await page.evaluate(() => window.result);
        assert.ok(result.ok, JSON.stringify(result));
        assert.equal(result.ok.providerConfigKey, 'gh-app');
        assert.equal(result.ok.isPending, false);

        const connection = await nango.getConnection('gh-app', result.ok.connectionId);
        assert.equal(connection.connection_config.installation_id, '777');
        assert.equal(connection.end_user.id, 'browser-user');
        const repos = await nango.get({ endpoint: '/repos', providerConfigKey: 'gh-app', connectionId: result.ok.connectionId });
        assert.equal(repos.data.token, connection.credentials.access_token);
        assert.deepEqual(errors, []);
        await context.close();
    });

    it('openConnectUI shows Latchkey’s Connect UI, works by keyboard, and reports the connection', async () => {
        const token = await sessionToken(['apikey-prod', 'oidc']);
        const { context, page, errors } = await openApp();
        await page.evaluate(
            ({ base, api, token }) => {
                const nango = new window.Nango({ host: api, connectSessionToken: token });
                window.ui = nango.openConnectUI({ baseURL: base, apiURL: api, onEvent: (e) => window.events.push(e) });
                window.ui.setSessionToken(token);
            },
            { base: `${gateway.url}/connect`, api: gateway.url, token }
        );
        const frame = page.frameLocator('#connect-ui');
        const list = frame.locator('button.integration');
        await list.first().waitFor({ timeout: 30_000 });
        assert.equal(await list.count(), 2);
        assert.deepEqual((await list.allTextContents()).sort(), ['Local OIDC', 'Verify (API key)']);
        assert.equal(await frame.locator('#brand').isVisible(), true, 'the configured logo is shown');
        const primary = await frame.locator('html').evaluate((el) => getComputedStyle(el).getPropertyValue('--primary').trim());
        assert.equal(primary, '#7c3aed', 'the configured theme colour is applied');
        // Every logo loaded (no 404 on /images/template-logos/*.svg).
        const logosLoaded = await frame.locator('button.integration img').evaluateAll((imgs) => imgs.every((i) => i.complete && i.naturalWidth > 0));
        assert.ok(logosLoaded);
        const listShot = await page.screenshot({ path: path.join(SHOTS, 'list.png') });

        // By keyboard: the first control has focus; Tab to the API-key integration, Enter.
        await frame.locator('button.integration[data-key="apikey-prod"]').focus();
        await page.keyboard.press('Enter');
        const workspace = frame.locator('input[name="workspace"]');
        await workspace.waitFor();
        assert.equal(await frame.locator('label[for="params-workspace"]').innerText().then((t) => t.startsWith('Workspace')), true);
        // Submitting empty shows the validation messages, focused on the first field.
        await frame.locator('button[type="submit"]').focus();
        await page.keyboard.press('Enter');
        await frame.locator('#params-workspace-error').waitFor({ state: 'visible' });
        assert.equal(await workspace.getAttribute('aria-invalid'), 'true');
        assert.equal(await frame.locator('#credentials-apiKey-error').isVisible(), true);
        const invalidShot = await page.screenshot({ path: path.join(SHOTS, 'validation.png') });

        await workspace.focus();
        await page.keyboard.type('Not Valid');
        await page.keyboard.press('Tab');
        await page.keyboard.type('bad-key');
        await page.keyboard.press('Enter');
        await frame.locator('#params-workspace-error:has-text("expected format")').waitFor();

        await workspace.fill('acme');
        await frame.locator('input[name="apiKey"]').fill('bad-key');
        await page.keyboard.press('Enter');
        await frame.locator('#form-error:has-text("not accepted")').waitFor({ timeout: 30_000 });

        await frame.locator('input[name="apiKey"]').fill('good-key');
        await frame.locator('input[name="apiKey"]').press('Enter');
        await frame.locator('#finish').waitFor({ timeout: 30_000 });
        const doneShot = await page.screenshot({ path: path.join(SHOTS, 'connected.png') });

        const events = await page.evaluate(() => window.events);
        const connect = events.find((e) => e.type === 'connect');
        assert.ok(connect, JSON.stringify(events));
        assert.equal(connect.payload.providerConfigKey, 'apikey-prod');
        assert.ok(events.some((e) => e.type === 'error' && e.payload.errorType === 'connection_test_failed'));
        const connection = await nango.getConnection('apikey-prod', connect.payload.connectionId);
        assert.deepEqual(connection.credentials, { type: 'API_KEY', apiKey: 'good-key' });

        await frame.locator('#finish').focus();
        await page.keyboard.press('Enter');
        await page.waitForFunction(() => !document.getElementById('connect-ui'));
        assert.ok((await page.evaluate(() => window.events)).some((e) => e.type === 'close'));

        for (const shot of [listShot, invalidShot, doneShot]) {
            const size = pngSize(shot);
            assert.ok(size && size.width >= 300 && size.height >= 300, 'a real screenshot');
        }
        assert.ok(!listShot.equals(invalidShot) && !invalidShot.equals(doneShot), 'each step looks different');
        // Chromium logs every non-2xx fetch; the one refused key above is the only one allowed.
        const provoked = (e) => e.includes('status of 400') && e.includes('/api-auth/api-key/apikey-prod');
        assert.equal(errors.filter(provoked).length, 1);
        assert.deepEqual(errors.filter((e) => !provoked(e)), []);
        await context.close();
    });

    it('runs an OAuth popup from the Connect UI', async () => {
        const token = await sessionToken(['oidc']);
        const { context, page, errors } = await openApp();
        await page.evaluate(
            ({ base, api, token }) => {
                const nango = new window.Nango({ host: api, connectSessionToken: token });
                window.ui = nango.openConnectUI({ baseURL: base, apiURL: api, onEvent: (e) => window.events.push(e) });
                window.ui.setSessionToken(token);
            },
            { base: `${gateway.url}/connect`, api: gateway.url, token }
        );
        const frame = page.frameLocator('#connect-ui');
        // One allowed integration: the UI goes straight to it.
        const connect = frame.locator('button[type="submit"]');
        await connect.waitFor({ timeout: 30_000 });
        const [popup] = await Promise.all([context.waitForEvent('page'), connect.click()]);
        await consentInPopup(popup, OIDC_USER);
        await frame.locator('#finish').waitFor({ timeout: 60_000 });
        const events = await page.evaluate(() => window.events);
        const done = events.find((e) => e.type === 'connect');
        assert.equal(done.payload.providerConfigKey, 'oidc');
        const me = await nango.get({ endpoint: '/me', providerConfigKey: 'oidc', connectionId: done.payload.connectionId });
        assert.equal(me.data.sub, OIDC_USER.login);
        assert.deepEqual(errors, []);
        await context.close();
    });

    it('installs a GitHub App from the Connect UI', async () => {
        const token = await sessionToken(['gh-app']);
        const { context, page, errors } = await openApp();
        await page.evaluate(
            ({ base, api, token }) => {
                const nango = new window.Nango({ host: api, connectSessionToken: token });
                window.ui = nango.openConnectUI({ baseURL: base, apiURL: api, onEvent: (e) => window.events.push(e) });
                window.ui.setSessionToken(token);
            },
            { base: `${gateway.url}/connect`, api: gateway.url, token }
        );
        const frame = page.frameLocator('#connect-ui');
        const connect = frame.locator('button[type="submit"]');
        await connect.waitFor({ timeout: 30_000 });
        const [popup] = await Promise.all([context.waitForEvent('page'), connect.click()]);
        await popup.waitForSelector('#install', { timeout: 60_000 });
        await popup.click('#install');
        await frame.locator('#finish').waitFor({ timeout: 60_000 });
        const done = (await page.evaluate(() => window.events)).find((e) => e.type === 'connect');
        assert.equal(done.payload.providerConfigKey, 'gh-app');
        const repos = await nango.get({ endpoint: '/repos', providerConfigKey: 'gh-app', connectionId: done.payload.connectionId });
        assert.match(repos.data.token, /^ghs-\d+$/);
        assert.deepEqual(errors, []);
        await context.close();
    });

    it('runs a TWO_STEP sign-in from the Connect UI', async () => {
        const token = await sessionToken(['login-prod']);
        const { context, page, errors } = await openApp();
        await page.evaluate(
            ({ base, api, token }) => {
                const nango = new window.Nango({ host: api, connectSessionToken: token });
                window.ui = nango.openConnectUI({ baseURL: base, apiURL: api, onEvent: (e) => window.events.push(e) });
                window.ui.setSessionToken(token);
            },
            { base: `${gateway.url}/connect`, api: gateway.url, token }
        );
        const frame = page.frameLocator('#connect-ui');
        const user = frame.locator('input[name="user"]');
        await user.waitFor({ timeout: 30_000 });
        assert.equal(await frame.locator('input[name="pass"]').getAttribute('type'), 'password');
        await user.fill('carol');
        await frame.locator('input[name="pass"]').fill('hunter2-hunter2');
        await frame.locator('input[name="pass"]').press('Enter');
        await frame.locator('#finish').waitFor({ timeout: 30_000 });
        const done = (await page.evaluate(() => window.events)).find((e) => e.type === 'connect');
        const proxied = await nango.get({ endpoint: '/x', providerConfigKey: 'login-prod', connectionId: done.payload.connectionId });
        assert.equal(proxied.data.ok, true);
        assert.deepEqual(errors, []);
        await context.close();
    });
});
