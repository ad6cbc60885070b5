// Webhooks to the customer: stored before sending, signed as Nango signs them, retried on 5xx,
// 429 and network errors, kept across restarts, listable and replayable. A real HTTP receiver
// on loopback checks each request with the @nangohq/node verifier.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { loopbackCatalog } from '../support/catalog.mjs';
import { databases } from '../support/db.mjs';
import { startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';
import { eventually, startReceiver } from '../support/webhooks.mjs';

const SIGNING_SECRET = 'whsec-test-0123456789';

for (const db of databases()) {
    describe(`webhooks on ${db}`, () => {
        let upstream, receiver, gateway, nango;

        before(async () => {
            upstream = await startUpstream();
            receiver = await startReceiver();
            gateway = await startGateway({
                db,
                config: [
                    'catalogs: [test-catalog.yaml]',
                    'integrations:',
                    '  acme:',
                    '    provider: acme-apikey',
                    'webhooks:',
                    `  primary_url: ${receiver.url}/hooks`,
                    '  signing_secret: ${env:HOOK_SECRET}',
                    ''
                ].join('\n'),
                files: { 'test-catalog.yaml': loopbackCatalog(upstream.url) },
                env: { HOOK_SECRET: SIGNING_SECRET }
            });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url, webhookSigningKey: SIGNING_SECRET });
        });

        after(async () => {
            await gateway?.stop();
            await receiver?.close();
            await upstream?.close();
        });

        const importConnection = (connectionId) =>
            gateway.fetch('/connections', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                    provider_config_key: 'acme',
                    connection_id: connectionId,
                    credentials: { type: 'API_KEY', apiKey: 'k' },
                    end_user: { id: 'u1', email: 'u1@example.com' }
                })
            });

        const deliveriesOf = async (connectionId) => {
            const res = await gateway.fetch(`/webhooks/deliveries?connection_id=${encodeURIComponent(connectionId)}`);
            assert.equal(res.status, 200);
            return (await res.json()).deliveries;
        };

        it('sends the auth webhook in Nango shape, signed with the configured secret', async () => {
            assert.equal((await importConnection('signed')).status, 201);
            const [hook] = await eventually(() => receiver.about('signed').length === 1 && receiver.about('signed'), { what: 'the webhook' });
            assert.equal(hook.path, '/hooks');
            assert.equal(hook.headers['content-type'], 'application/json');
            assert.ok(nango.verifyIncomingWebhookRequest(hook.raw, hook.headers), 'X-Nango-Hmac-Sha256 verifies');
            assert.ok(nango.verifyWebhookSignature(hook.headers['x-nango-signature'], hook.body), 'the legacy signature verifies');
            const wrongKey = new Nango({ secretKey: gateway.secretKey, host: gateway.url, webhookSigningKey: 'other' });
            assert.equal(wrongKey.verifyIncomingWebhookRequest(hook.raw, hook.headers), false);
            assert.equal(wrongKey.verifyIncomingWebhookRequest(hook.raw.replace('signed', 'signeX'), hook.headers), false);
            assert.deepEqual(
                { ...hook.body, tags: undefined },
                {
                    from: 'nango',
                    type: 'auth',
                    operation: 'creation',
                    success: true,
                    connectionId: 'signed',
                    providerConfigKey: 'acme',
                    provider: 'acme-apikey',
                    authMode: 'API_KEY',
                    environment: 'prod',
                    tags: undefined,
                    endUser: { endUserId: 'u1', endUserEmail: 'u1@example.com', organizationId: null, tags: {} }
                }
            );
            assert.equal(hook.body.tags.end_user_id, 'u1');
            // Importing it again is an override.
            assert.equal((await importConnection('signed')).status, 201);
            const second = await eventually(() => receiver.about('signed')[1], { what: 'the override webhook' });
            assert.equal(second.body.operation, 'override');
            const [latest] = await deliveriesOf('signed');
            assert.equal(latest.type, 'auth');
            assert.equal(latest.url, `${receiver.url}/hooks`);
            assert.equal(latest.payload.operation, 'override');
        });

        it('retries a 500 until the receiver takes it', async () => {
            receiver.plan('flaky', [500, 503]);
            assert.equal((await importConnection('flaky')).status, 201);
            const [delivery] = await eventually(async () => {
                const list = await deliveriesOf('flaky');
                return list[0]?.status === 'delivered' && list;
            }, { what: 'delivery after two failures' });
            assert.equal(delivery.attempts, 3);
            assert.equal(delivery.last_status, 200);
            const seen = receiver.about('flaky');
            assert.equal(seen.length, 3);
            assert.ok(seen.every((s) => s.raw === seen[0].raw), 'every attempt sends the same bytes');
            assert.ok(seen[1].at - seen[0].at >= 900, 'retries back off');
        });

        it('honours Retry-After on 429', async () => {
            receiver.plan('limited', [{ status: 429, headers: { 'retry-after': '3' } }]);
            assert.equal((await importConnection('limited')).status, 201);
            const seen = await eventually(() => receiver.about('limited').length >= 2 && receiver.about('limited'), { what: 'the retry' });
            assert.ok(seen[1].at - seen[0].at >= 2900, `waited ${seen[1].at - seen[0].at} ms, asked for 3 s`);
            await eventually(async () => (await deliveriesOf('limited'))[0]?.status === 'delivered', { what: 'delivered' });
        });

        it('gives up on a 4xx and sends it again on replay', async () => {
            receiver.plan('gone', [404]);
            assert.equal((await importConnection('gone')).status, 201);
            const [failed] = await eventually(async () => {
                const list = await deliveriesOf('gone');
                return list[0]?.status === 'failed' && list;
            }, { what: 'the failure' });
            assert.equal(failed.last_status, 404);
            assert.equal(receiver.about('gone').length, 1);

            const unauthenticated = await fetch(`${gateway.url}/webhooks/deliveries/${failed.id}/replay`, { method: 'POST' });
            assert.equal(unauthenticated.status, 401);
            const replay = await gateway.fetch(`/webhooks/deliveries/${failed.id}/replay`, { method: 'POST' });
            assert.equal(replay.status, 202);
            assert.equal((await replay.json()).status, 'pending');
            await eventually(() => receiver.about('gone').length === 2, { what: 'the replayed webhook' });
            const [first, again] = receiver.about('gone');
            assert.equal(again.raw, first.raw);
            assert.ok(nango.verifyIncomingWebhookRequest(again.raw, again.headers));
            const shown = await (await gateway.fetch(`/webhooks/deliveries/${failed.id}`)).json();
            await eventually(async () => (await (await gateway.fetch(`/webhooks/deliveries/${failed.id}`)).json()).status === 'delivered');
            assert.equal(shown.id, failed.id);
            assert.equal((await gateway.fetch('/webhooks/deliveries/999999/replay', { method: 'POST' })).status, 404);
        });

        it('never makes the caller wait for a slow receiver', async () => {
            receiver.plan('slow', [{ status: 200, delayMs: 5000 }]);
            assert.equal((await importConnection('slow')).status, 201);
            const hook = await eventually(() => receiver.about('slow')[0], { what: 'the slow webhook to arrive' });
            // The API answered while the receiver is still sitting on the webhook.
            assert.equal(hook.answered, false);
            const res = await gateway.fetch('/connections?connectionId=slow');
            assert.equal(res.status, 200);
            assert.equal(hook.answered, false);
            await eventually(async () => (await deliveriesOf('slow'))[0]?.status === 'delivered', { what: 'delivered' });
        });

        it('keeps pending deliveries across a restart', async () => {
            receiver.plan('restart', Array(50).fill(503));
            assert.equal((await importConnection('restart')).status, 201);
            await eventually(() => receiver.about('restart').length >= 1, { what: 'the first attempt' });
            await gateway.restart();
            const before = receiver.about('restart').length;
            receiver.plan('restart', []);
            await eventually(async () => (await deliveriesOf('restart'))[0]?.status === 'delivered', { what: 'delivery after the restart', timeoutMs: 90_000 });
            const after = receiver.about('restart');
            assert.ok(after.length > before, 'the restarted gateway sent it');
            assert.equal(after.at(-1).raw, after[0].raw);
        });

        it('lists deliveries with filters, behind the secret key', async () => {
            assert.equal((await fetch(`${gateway.url}/webhooks/deliveries`)).status, 401);
            const res = await gateway.fetch('/webhooks/deliveries?status=delivered&type=auth&limit=2');
            assert.equal(res.status, 200);
            const { deliveries } = await res.json();
            assert.equal(deliveries.length, 2);
            assert.ok(deliveries.every((d) => d.status === 'delivered' && d.type === 'auth'));
            assert.ok(deliveries[0].id > deliveries[1].id, 'newest first');
            assert.equal((await gateway.fetch('/webhooks/deliveries?status=lost')).status, 400);
        });
    });
}
