// OAuth 1.0a end to end: request token, consent, access token, and proxied requests signed one
// by one, against providers that check every HMAC-SHA1 or RSA-SHA1 signature with their own
// implementation.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { startGateway } from '../support/gateway.mjs';
import { openFrontendSocket, startFakeOAuth1Provider, walkPopup } from '../support/oauth.mjs';

const CONSUMER = { key: 'consumer-key', secret: 'consumer secret & more' };

const RSA = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });

function fakeEntry(name, url, method) {
    return `
${name}:
    display_name: Fake OAuth 1 (${method})
    categories: [other]
    auth_mode: OAUTH1
    request_url: ${url}/request_token
    authorization_url: ${url}/authorize
    token_url: ${url}/access_token
    signature_method: ${method}
    scope_separator: ','
    authorization_params:
        expiration: never
    proxy:
        base_url: ${url}/api
    docs: https://example.com/oauth1
`;
}

describe('OAuth 1.0a', () => {
    let provider, rsaProvider, gateway, nango;

    before(async () => {
        provider = await startFakeOAuth1Provider({ consumerKey: CONSUMER.key, consumerSecret: CONSUMER.secret });
        rsaProvider = await startFakeOAuth1Provider({
            consumerKey: CONSUMER.key,
            consumerSecret: 'unused',
            publicKey: RSA.publicKey.export({ type: 'spki', format: 'pem' })
        });
        gateway = await startGateway({
            config: `catalogs: [oauth1.yaml]
integrations:
  legacy:
    provider: fake-oauth1
    client_id: ${CONSUMER.key}
    client_secret: \${env:CONSUMER_SECRET}
    scopes: [read, write]
  legacy-rsa:
    provider: fake-oauth1-rsa
    client_id: ${CONSUMER.key}
    client_secret: \${env:CONSUMER_SECRET}
    private_key: \${env:CONSUMER_RSA_KEY}
`,
            env: { CONSUMER_SECRET: CONSUMER.secret, CONSUMER_RSA_KEY: RSA.privateKey.export({ type: 'pkcs8', format: 'pem' }) },
            files: {
                'oauth1.yaml': fakeEntry('fake-oauth1', provider.url, 'HMAC-SHA1') + fakeEntry('fake-oauth1-rsa', rsaProvider.url, 'RSA-SHA1')
            }
        });
        nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
    });

    after(async () => {
        await gateway?.stop();
        await provider?.close();
        await rsaProvider?.close();
    });

    it('creates the connection through the three legs and signs every proxied request', async () => {
        const { data } = await nango.createConnectSession({ end_user: { id: 'u-1' } });
        const socket = await openFrontendSocket(gateway.url);
        const first = await fetch(`${gateway.url}/oauth/connect/legacy?connect_session_token=${data.token}&ws_client_id=${socket.wsClientId}`, {
            redirect: 'manual'
        });
        assert.equal(first.status, 302);
        const authorize = new URL(first.headers.get('location'));
        assert.equal(authorize.pathname, '/authorize');
        assert.match(authorize.searchParams.get('oauth_token'), /^req-\d+$/);
        assert.equal(authorize.searchParams.get('scope'), 'read,write');
        assert.equal(authorize.searchParams.get('expiration'), 'never');

        const end = await walkPopup(first.headers.get('location'));
        assert.equal(end.status, 200, end.text);
        const result = await socket.next();
        socket.close();
        assert.equal(result.message_type, 'success');

        const connection = await nango.getConnection('legacy', result.connection_id);
        assert.equal(connection.credentials.type, 'OAUTH1');
        assert.match(connection.credentials.oauth_token, /^acc-\d+$/);
        assert.match(connection.credentials.oauth_token_secret, /^accsecret-\d+$/);
        assert.equal(connection.credentials.raw.user_id, '42');
        const token = await nango.getToken('legacy', result.connection_id);
        assert.equal(token.oAuthToken, connection.credentials.oauth_token);

        // Each request gets its own nonce and signature, over its own URL and query.
        const one = await nango.get({ endpoint: '/things', params: { q: 'a b', page: '2' }, providerConfigKey: 'legacy', connectionId: result.connection_id });
        assert.equal(one.data.verified, true);
        const two = await nango.get({ endpoint: '/other/path', providerConfigKey: 'legacy', connectionId: result.connection_id });
        assert.equal(two.data.verified, true);
        const signatures = provider.requests.filter((r) => r.url.startsWith('/api/')).map((r) => r.authorization);
        assert.equal(new Set(signatures).size, signatures.length);
        assert.ok(!gateway.output.includes(connection.credentials.oauth_token_secret), 'no secret in the logs');
    });

    it('signs with RSA-SHA1 when the provider says so, with the integration private key', async () => {
        const { data } = await nango.createConnectSession({ end_user: { id: 'u-2' } });
        const socket = await openFrontendSocket(gateway.url);
        const end = await walkPopup(`${gateway.url}/oauth/connect/legacy-rsa?connect_session_token=${data.token}&ws_client_id=${socket.wsClientId}`);
        assert.equal(end.status, 200, end.text);
        const result = await socket.next();
        socket.close();
        assert.equal(result.message_type, 'success');
        const proxied = await nango.get({ endpoint: '/things', params: { a: '1' }, providerConfigKey: 'legacy-rsa', connectionId: result.connection_id });
        assert.equal(proxied.data.verified, true);
        assert.ok(rsaProvider.requests.every((r) => !r.authorization || r.authorization.includes('oauth_signature_method="RSA-SHA1"')));
    });
});
