// Async actions are durable tasks: one accepted with 202 finishes although the gateway is
// killed (SIGKILL) during its run or during its back-off, retries counting the attempt the
// kill cut short; one with no retries left fails with a clear error; on PostgreSQL another node
// takes it up and any node reads the result; a result is never readable without its webhook
// stored; finished results are pruned after their retention.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { databases } from '../support/db.mjs';
import { startGateway } from '../support/gateway.mjs';
import { githubCatalog, importGithubConnection, startGithub, TWO_LABELS } from '../support/github.mjs';
import { eventually, startReceiver } from '../support/webhooks.mjs';

const CONFIG = (receiverUrl) => `catalogs: [test-catalog.yaml]
webhooks:
  primary_url: ${receiverUrl}/hooks
integrations:
  github:
    provider: github-loopback
    actions:
      count-labels: {}
      flaky: {}
`;

// Each action keeps the times of its attempts in the connection's metadata, so a test sees
// every attempt whichever node ran it.
const RECORD_ATTEMPT = `const metadata = (await nango.getMetadata()) || {};
    const attempts = [...(metadata.attempts || []), Date.now()];
    await nango.updateMetadata({ attempts });`;

const FILES = {
    'functions/github/actions/count-labels.ts': `export default async function run(nango: any) {
    ${RECORD_ATTEMPT}
    const labels = await nango.get({ endpoint: '/repos/octo/hello/labels' });
    return { attempts: attempts.length, labels: labels.data.length };
}
`,
    'functions/github/actions/flaky.ts': `export default async function run(nango: any, input: { failures: number }) {
    ${RECORD_ATTEMPT}
    if (attempts.length <= input.failures) {
        throw new Error(\`attempt \${attempts.length} failed\`);
    }
    return { attempts: attempts.length };
}
`
};

const KEY = 'github';
const CONN = 'octo';

for (const db of databases()) {
    describe(`durable async actions on ${db}`, () => {
        let github, gateway, nango, receiver;

        before(async () => {
            receiver = await startReceiver();
            github = await startGithub();
            github.state.labels = structuredClone(TWO_LABELS);
            gateway = await startGateway({
                db,
                config: CONFIG(receiver.url),
                files: { 'test-catalog.yaml': githubCatalog(github.url), ...FILES },
                env: { LATCHKEY_SYNC_STALE_MS: '3000' }
            });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
            await importGithubConnection(gateway, KEY, CONN);
        });

        after(async () => {
            await gateway?.stop();
            await github?.close();
            await receiver?.close();
        });

        /** Starts an action asynchronously on `node` with X-Max-Retries; returns its status URL. */
        async function trigger(node, action, input, maxRetries) {
            await nango.setMetadata(KEY, CONN, { attempts: [] });
            const res = await node.fetch('/action/trigger', {
                method: 'POST',
                headers: { 'content-type': 'application/json', 'provider-config-key': KEY, 'connection-id': CONN, 'x-async': 'true', 'x-max-retries': String(maxRetries) },
                body: JSON.stringify({ action_name: action, input })
            });
            assert.equal(res.status, 202, await res.clone().text());
            return (await res.json()).statusUrl;
        }

        /** The answer of GET /action/:id on `node` once the action has finished. */
        const outcome = (node, statusUrl) =>
            eventually(
                async () => {
                    const res = await node.fetch(statusUrl);
                    return res.status === 404 ? null : { status: res.status, body: await res.json() };
                },
                { what: 'the async action', timeoutMs: 30_000 }
            );

        /** Checks that the async_action webhook of a finished action is stored on `node` as soon as
         * its result is readable: the two are committed together. */
        async function webhookStored(node, statusUrl) {
            const res = await node.fetch('/webhooks/deliveries?type=async_action');
            assert.equal(res.status, 200);
            const stored = (await res.json()).deliveries.filter((d) => d.payload.payload.statusUrl === statusUrl);
            assert.equal(stored.length, 1, 'the webhook is stored with the result');
        }

        const attempts = async () => (await nango.getMetadata(KEY, CONN)).attempts;
        const labelReads = () => github.requests.filter((r) => r.url === '/repos/octo/hello/labels').length;

        /** Waits for the async_action webhook of the action, and checks that it came once. */
        async function webhookOnce(statusUrl) {
            const about = () => receiver.received.filter((r) => r.body?.type === 'async_action' && r.body.payload.statusUrl === statusUrl);
            await eventually(() => about().length > 0, { what: 'the async_action webhook' });
            await new Promise((r) => setTimeout(r, 1_000));
            assert.equal(about().length, 1, 'one webhook');
            assert.deepEqual(about()[0].body, { type: 'async_action', from: 'nango', connectionId: CONN, providerConfigKey: KEY, payload: { id: statusUrl.split('/').pop(), statusUrl } });
        }

        /** Kills `node` with SIGKILL once the action it runs is waiting for the slow labels. */
        async function killDuringRun(node, readsBefore) {
            await eventually(() => labelReads() > readsBefore, { what: 'the action reading the labels' });
            node.child.kill('SIGKILL');
            await node.exited;
            github.state.delayMs = 0;
        }

        /** Restarts the killed gateway and points the SDK at its new port. */
        async function restart() {
            await gateway.restart();
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        }

        it('finishes an async action whose gateway was killed during its run, counting that attempt', async () => {
            github.state.delayMs = 60_000;
            const reads = labelReads();
            const statusUrl = await trigger(gateway, 'count-labels', {}, 1);
            await killDuringRun(gateway, reads);
            await restart();
            const done = await outcome(gateway, statusUrl);
            await webhookStored(gateway, statusUrl);
            assert.equal(done.status, 200, JSON.stringify(done.body));
            assert.deepEqual(done.body, { attempts: 2, labels: 2 });
            assert.deepEqual(await nango.getAsyncActionResult({ statusUrl }), { attempts: 2, labels: 2 });
            assert.equal((await attempts()).length, 2);
            await webhookOnce(statusUrl);
        });

        it('fails an async action killed during its run with no retries left, saying why', async () => {
            github.state.delayMs = 60_000;
            const reads = labelReads();
            await nango.setMetadata(KEY, CONN, { attempts: [] });
            const { statusUrl } = await nango.triggerActionAsync(KEY, CONN, 'count-labels', {});
            await killDuringRun(gateway, reads);
            await restart();
            const done = await outcome(gateway, statusUrl);
            await webhookStored(gateway, statusUrl);
            assert.equal(done.status, 500, JSON.stringify(done.body));
            assert.equal(done.body.error.message, 'the node running it stopped');
            await new Promise((r) => setTimeout(r, 1_500));
            assert.equal((await attempts()).length, 1, 'not run again');
            assert.equal(labelReads(), reads + 1);
            await webhookOnce(statusUrl);
        });

        it('runs an async action whose gateway was killed during its back-off after the restart', async () => {
            const statusUrl = await trigger(gateway, 'flaky', { failures: 1 }, 1);
            await eventually(async () => (await attempts()).length === 1, { what: 'the first attempt', intervalMs: 50 });
            assert.equal((await gateway.fetch(statusUrl)).status, 404, 'not finished: waiting for its retry');
            gateway.child.kill('SIGKILL');
            await gateway.exited;
            await restart();
            const done = await outcome(gateway, statusUrl);
            assert.equal(done.status, 200, JSON.stringify(done.body));
            assert.deepEqual(done.body, { attempts: 2 });
            const times = await attempts();
            assert.equal(times.length, 2);
            assert.ok(times[1] - times[0] >= 1_400, `the back-off is kept across the restart (${times[1] - times[0]} ms)`);
        });

        if (db === 'postgres') {
            it('lets another node take up an action whose node died, and any node read its result', async () => {
                const second = await startGateway({
                    db: { url: gateway.databaseUrl },
                    config: CONFIG(receiver.url),
                    files: { 'test-catalog.yaml': githubCatalog(github.url), ...FILES },
                    env: { LATCHKEY_SYNC_STALE_MS: '3000' },
                    secretKey: gateway.secretKey,
                    encryptionKey: gateway.encryptionKey
                });
                try {
                    github.state.delayMs = 60_000;
                    const reads = labelReads();
                    const statusUrl = await trigger(gateway, 'count-labels', {}, 1);
                    await killDuringRun(gateway, reads);
                    const done = await outcome(second, statusUrl);
                    await webhookStored(second, statusUrl);
                    assert.equal(done.status, 200, JSON.stringify(done.body));
                    assert.deepEqual(done.body, { attempts: 2, labels: 2 });
                    assert.match(second.output, /async action\(s\) whose node stopped during an attempt run again/);

                    await restart();
                    assert.deepEqual(await nango.getAsyncActionResult({ statusUrl }), { attempts: 2, labels: 2 });
                    const onSecond = new Nango({ secretKey: second.secretKey, host: second.url });
                    await nango.setMetadata(KEY, CONN, { attempts: [] });
                    const started = await onSecond.triggerActionAsync(KEY, CONN, 'flaky', { failures: 0 });
                    assert.deepEqual((await outcome(gateway, started.statusUrl)).body, { attempts: 1 }, 'read on the node that did not accept it');
                } finally {
                    await second.stop();
                }
            });
        }

        it('prunes finished results after LATCHKEY_ACTION_RESULTS_RETENTION', async () => {
            const statusUrl = await trigger(gateway, 'flaky', { failures: 0 }, 0);
            assert.deepEqual((await outcome(gateway, statusUrl)).body, { attempts: 1 });
            await new Promise((r) => setTimeout(r, 1_100));
            gateway.env.LATCHKEY_ACTION_RESULTS_RETENTION = '1s';
            await restart();
            await eventually(async () => (await gateway.fetch(statusUrl)).status === 404, { what: 'the pruned result' });
            assert.match(gateway.output, /pruned \d+ async action results/);
        });
    });
}
