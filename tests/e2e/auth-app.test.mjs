// The GitHub App (APP) install flow, end to end, as the frontend SDK drives it: WebSocket on `/`,
// the popup through /oauth/connect to the app's install page on a GitHub of our own on loopback,
// which sends the user back with the installation id; the gateway mints the installation token
// at that GitHub's access_tokens endpoint (which checks the RS256 app JWT with Node's crypto),
// stores the connection, tells the socket and the webhook receiver, and proxies with the token.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { databases } from '../support/db.mjs';
import { startGateway } from '../support/gateway.mjs';
import { APP_FILES, APP_ID, APP_KEY_PEM, githubAppCatalog, githubAppIntegrations, startGithubApp } from '../support/github-app.mjs';
import { openFrontendSocket, walkPopup } from '../support/oauth.mjs';
import { eventually, startReceiver } from '../support/webhooks.mjs';

for (const db of databases()) {
    describe(`GitHub App install flow on ${db}`, () => {
        let github, receiver, gateway, nango;

        before(async () => {
            github = await startGithubApp();
            receiver = await startReceiver();
            gateway = await startGateway({
                db,
                config: `catalogs: [app-catalog.yaml]
integrations:
${githubAppIntegrations(github.url)}webhooks:
  primary_url: ${receiver.url}/hooks
`,
                files: { 'app-catalog.yaml': githubAppCatalog(github.url), ...APP_FILES }
            });
            github.state.callbackUrl = `${gateway.url}/app-auth/connect`;
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        });

        after(async () => {
            await gateway?.stop();
            await receiver?.close();
            await github?.close();
        });

        const sessionToken = async (extra = {}) =>
            (
                await nango.createConnectSession({
                    end_user: { id: 'u-app', email: 'app@example.com' },
                    allowed_integrations: ['gh-app', 'gh-app-no-link'],
                    ...extra
                })
            ).data.token;

        /** Runs the popup: connect, the install page, the user's click; resolves to the end page and the socket's message. */
        async function install(key = 'gh-app', { session = {}, query = '' } = {}) {
            const socket = await openFrontendSocket(gateway.url);
            const token = await sessionToken(session);
            const first = await fetch(`${gateway.url}/oauth/connect/${key}?connect_session_token=${token}&ws_client_id=${socket.wsClientId}${query}`, {
                redirect: 'manual'
            });
            if (first.status !== 302) {
                const message = await socket.next();
                socket.close();
                return { first, end: { status: first.status, text: await first.text() }, message };
            }
            const page = await fetch(first.headers.get('location'));
            const end = await walkPopup(github.state.installLink(await page.text()));
            const message = await socket.next(60_000);
            socket.close();
            return { first, end, message };
        }

        it('installs the app, mints the installation token, and proxies with it', async () => {
            const { first, end, message } = await install();
            const location = new URL(first.headers.get('location'));
            assert.equal(location.origin + location.pathname, `${github.url}/apps/latchkey-test/installations/new`);
            assert.match(location.searchParams.get('state'), /^[0-9a-f]{64}$/);
            assert.deepEqual([...location.searchParams.keys()], ['state']);
            assert.equal(end.status, 200, end.text);
            assert.match(end.text, /nango_oauth_callback_success/);
            assert.equal(message.message_type, 'success', JSON.stringify(message));
            assert.equal(message.provider_config_key, 'gh-app');
            assert.equal(message.is_pending, false);

            const connection = await nango.getConnection('gh-app', message.connection_id);
            assert.equal(connection.credentials.type, 'APP');
            assert.match(connection.credentials.access_token, /^ghs-\d+$/);
            assert.ok(Date.parse(connection.credentials.expires_at) > Date.now() + 50 * 60_000);
            assert.deepEqual(connection.credentials.raw.permissions, { issues: 'read' });
            assert.equal(connection.connection_config.installation_id, '777');
            assert.equal(connection.connection_config.app_id, APP_ID);
            assert.equal(connection.end_user.id, 'u-app');

            const hook = await eventually(() => receiver.about(message.connection_id).find((h) => h.body.type === 'auth'), { what: 'the auth webhook' });
            assert.equal(hook.body.operation, 'creation');
            assert.equal(hook.body.success, true);
            assert.equal(hook.body.authMode, 'APP');
            assert.equal(hook.body.providerConfigKey, 'gh-app');

            const proxied = await nango.get({ endpoint: '/repos', providerConfigKey: 'gh-app', connectionId: message.connection_id });
            assert.equal(proxied.data.token, connection.credentials.access_token);
            assert.equal(proxied.data.path, '/api/repos');
            assert.ok(!gateway.output.includes(connection.credentials.access_token), 'no token in the logs');
        });

        it('takes the return on /oauth/callback too', async () => {
            github.state.callbackUrl = `${gateway.url}/oauth/callback`;
            const { end, message } = await install();
            github.state.callbackUrl = `${gateway.url}/app-auth/connect`;
            assert.equal(end.status, 200, end.text);
            assert.equal(message.message_type, 'success', JSON.stringify(message));
            const connection = await nango.getConnection('gh-app', message.connection_id);
            assert.equal(connection.connection_config.installation_id, '777');
        });

        it("passes GitHub's refusal to the user verbatim, without the app's secrets", async () => {
            github.state.answer = 'unknown';
            const { end, message } = await install();
            github.state.answer = 'install';
            assert.equal(github.state.tokenCalls.at(-1), '999');
            assert.equal(end.status, 400);
            assert.match(end.text, /nango_oauth_callback_error/);
            assert.equal(message.message_type, 'error');
            assert.equal(message.error_type, 'token_refused');
            assert.match(message.error_desc, /HTTP 404\): Not Found/);
            const key = APP_KEY_PEM.split('\n')[1];
            for (const text of [message.error_desc, end.text, gateway.output]) {
                assert.ok(!text.includes(key), 'the private key appears nowhere');
                assert.ok(!/eyJ[A-Za-z0-9_-]{10,}\.eyJ/.test(text), 'nor the app JWT');
            }
        });

        it('explains an installation that waits for approval', async () => {
            github.state.answer = 'request';
            const { end, message } = await install();
            github.state.answer = 'install';
            assert.equal(end.status, 400);
            assert.equal(message.error_type, 'callback_err');
            assert.match(message.error_desc, /approval/);
        });

        it("refuses before the redirect when neither the integration nor the session names the app's page", async () => {
            const page = `${github.url}/apps/latchkey-test`;
            // A page the frontend names is not followed.
            const { first, end, message } = await install('gh-app-no-link', { query: `&params[appPublicLink]=${encodeURIComponent(page)}` });
            assert.equal(first.status, 400);
            assert.match(end.text, /no app_link/);
            assert.equal(message.error_type, 'provider_config_err');

            const fromSession = await install('gh-app-no-link', {
                session: { integrations_config_defaults: { 'gh-app-no-link': { connection_config: { appPublicLink: page } } } }
            });
            assert.equal(fromSession.first.status, 302);
            assert.ok(fromSession.first.headers.get('location').startsWith(`${page}/installations/new?state=`));
            assert.equal(fromSession.message.message_type, 'success', JSON.stringify(fromSession.message));
        });

        it('sends an installation change made on GitHub back where it came from', async () => {
            const changed = await fetch(`${gateway.url}/app-auth/connect?installation_id=777&setup_action=update`, {
                redirect: 'manual',
                headers: { referer: 'https://github.com/settings/installations/777' }
            });
            assert.equal(changed.status, 302);
            assert.equal(changed.headers.get('location'), 'https://github.com/settings/installations/777');
            const forged = await fetch(`${gateway.url}/app-auth/connect?installation_id=777&setup_action=install&state=${'a'.repeat(64)}`);
            assert.equal(forged.status, 400);
            assert.match(await forged.text(), /unknown|expired/);
        });
    });
}
