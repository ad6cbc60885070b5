// Nango's sync and action controls, end to end through @nangohq/node: per-connection sync
// frequencies (which the scheduler follows, across a restart and a config reload), sync variants
// (their own schedule and records, deleted without touching another variant's), Nango's answers
// of start/pause/trigger and the status for what does not exist, and retries of async actions
// (X-Max-Retries).
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { databases } from '../support/db.mjs';
import { startGateway } from '../support/gateway.mjs';
import { githubCatalog, importGithubConnection, startGithub, TWO_LABELS } from '../support/github.mjs';
import { failureOf, runSync, syncStatus } from '../support/syncs.mjs';
import { eventually } from '../support/webhooks.mjs';

const CONFIG = (tickerRuns) => `catalogs: [test-catalog.yaml]
integrations:
  github:
    provider: github-loopback
    syncs:
      labels:
        runs: every 1 hour
        output: GithubLabel
        auto_start: false
      labels-mirror:
        runs: every 1 hour
        output: GithubLabel
        auto_start: false
      ticker:
        runs: ${tickerRuns}
        output: Tick
    actions:
      flaky: {}
models:
  GithubLabel:
    id: string
  Tick:
    id: string
`;

// The labels of the repository named like the variant, each record saying which variant saved it.
const VARIANT_LABELS = `import type { NangoSync } from 'nango';

export default async function run(nango: NangoSync): Promise<void> {
    const response = await nango.get<{ id: number; name: string }[]>({ endpoint: \`/repos/octo/\${nango.variant}/labels\` });
    await nango.batchSave(response.data.map((l) => ({ id: String(l.id), name: l.name, variant: nango.variant })), 'GithubLabel');
}
`;

const FILES = {
    'functions/github/syncs/labels.ts': VARIANT_LABELS,
    'functions/github/syncs/labels-mirror.ts': VARIANT_LABELS,
    'functions/github/syncs/ticker.ts': `export default async function run(nango: any): Promise<void> {
    await nango.get({ endpoint: '/repos/octo/ticker/labels' });
}
`,
    // Fails until it has been attempted more than \`input.failures\` times; the attempts (their
    // times) are kept in the connection's metadata.
    'functions/github/actions/flaky.ts': `export default async function run(nango: any, input: { failures: number }) {
    const metadata = (await nango.getMetadata()) || {};
    const attempts = [...(metadata.attempts || []), Date.now()];
    await nango.updateMetadata({ attempts });
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
    describe(`sync and action controls on ${db}`, () => {
        let github, gateway, nango;

        before(async () => {
            github = await startGithub();
            github.state.labels = structuredClone(TWO_LABELS);
            gateway = await startGateway({
                db,
                config: CONFIG('every 1 hour'),
                files: { 'test-catalog.yaml': githubCatalog(github.url), ...FILES },
                env: { LATCHKEY_SYNC_STALE_MS: '3000' }
            });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
            await importGithubConnection(gateway, KEY, CONN);
        });

        after(async () => {
            await gateway?.stop();
            await github?.close();
        });

        const status = (sync) => syncStatus(nango, KEY, CONN, sync);
        const labels = (variant) => nango.listRecords({ providerConfigKey: KEY, connectionId: CONN, model: 'GithubLabel', variant }).then((r) => r.records);
        const variantProps = (name, variant) => ({ provider_config_key: KEY, connection_id: CONN, name, variant });
        const tickerRuns = () => github.requests.filter((r) => r.url === '/repos/octo/ticker/labels').length;

        it('creates sync variants that run into their own datasets', async () => {
            const created = await nango.createSyncVariant(variantProps('labels', 'v1'));
            assert.equal(created.name, 'labels');
            assert.equal(created.variant, 'v1');
            assert.ok(created.id);
            await nango.createSyncVariant(variantProps('labels', 'v2'));

            const v1 = await status({ name: 'labels', variant: 'v1' });
            assert.equal(v1.id, created.id);
            assert.equal(v1.variant, 'v1');
            assert.equal(v1.status, 'PAUSED', 'a variant starts like its sync (auto_start: false)');
            assert.equal(v1.frequency, 'every 1 hour');

            const ran = await runSync(nango, KEY, CONN, { name: 'labels', variant: 'v1' });
            assert.equal(ran.latestExecutionStatus, 'SUCCESS', JSON.stringify(ran));
            assert.deepEqual(ran.recordCount, { GithubLabel: 2 });
            assert.ok(github.requests.some((r) => r.url === '/repos/octo/v1/labels'), 'the function saw its variant');
            await runSync(nango, KEY, CONN, { name: 'labels', variant: 'v2' });
            await runSync(nango, KEY, CONN, 'labels');

            const byVariant = {
                base: await labels(),
                v1: await labels('v1'),
                v2: await labels('v2')
            };
            for (const [variant, records] of Object.entries(byVariant)) {
                assert.deepEqual(records.map((r) => [r.id, r.variant]), [['1', variant], ['2', variant]], `the records of ${variant}`);
            }
        });

        it('refuses to create a variant twice, the base variant, unknown syncs and connections', async () => {
            let r = await failureOf(nango.createSyncVariant(variantProps('labels', 'v1')));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'sync_variant_already_exists');
            for (const base of ['base', 'BASE']) {
                r = await failureOf(nango.createSyncVariant(variantProps('labels', base)));
                assert.equal(r.status, 400);
                assert.equal(r.body.error.code, 'invalid_variant');
                r = await failureOf(nango.deleteSyncVariant(variantProps('labels', base)));
                assert.equal(r.status, 400);
                assert.equal(r.body.error.code, 'invalid_variant');
            }
            r = await failureOf(nango.createSyncVariant(variantProps('no-such-sync', 'v1')));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'unknown_sync');
            assert.match(r.body.error.message, /no sync `no-such-sync`/);
            r = await failureOf(nango.createSyncVariant(variantProps('flaky', 'v1')));
            assert.equal(r.body.error.code, 'unknown_sync', 'an action has no variants');
            r = await failureOf(nango.createSyncVariant({ ...variantProps('labels', 'v3'), connection_id: 'nobody' }));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'unknown_connection');
            assert.match(r.body.error.message, /nobody/);
            // `:` would let one variant's dataset (`Model::variant`) pass for another's.
            const bad = await gateway.fetch('/sync/labels/variant/a::b', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ provider_config_key: KEY, connection_id: CONN })
            });
            assert.equal(bad.status, 400);
            assert.equal((await bad.json()).error.code, 'invalid_uri_params');
        });

        it('deletes a variant: no longer scheduled, its records gone, the other variants untouched', async () => {
            assert.deepEqual(await nango.deleteSyncVariant(variantProps('labels', 'v1')), { success: true });
            const { syncs } = await nango.syncStatus(KEY, '*', CONN);
            assert.deepEqual(syncs.filter((s) => s.name === 'labels').map((s) => s.variant).sort(), ['base', 'v2']);
            assert.deepEqual(await labels('v1'), []);
            assert.equal((await labels('v2')).length, 2);
            assert.equal((await labels()).length, 2);

            const again = await failureOf(nango.deleteSyncVariant(variantProps('labels', 'v1')));
            assert.equal(again.status, 404);
            assert.equal(again.body.error.code, 'not_found');
            const unknown = await failureOf(nango.deleteSyncVariant(variantProps('no-such-sync', 'v1')));
            assert.equal(unknown.status, 400);
            assert.equal(unknown.body.error.code, 'unknown_sync');

            // Created again, it starts from nothing.
            await nango.createSyncVariant(variantProps('labels', 'v1'));
            assert.deepEqual((await status({ name: 'labels', variant: 'v1' })).recordCount, { GithubLabel: 0 });
            assert.equal((await status({ name: 'labels', variant: 'v1' })).finishedAt, null);
        });

        it('keeps the records of a model another sync writes under the same variant', async () => {
            await nango.createSyncVariant(variantProps('labels', 'shared'));
            await nango.createSyncVariant(variantProps('labels-mirror', 'shared'));
            await runSync(nango, KEY, CONN, { name: 'labels', variant: 'shared' });
            await runSync(nango, KEY, CONN, { name: 'labels-mirror', variant: 'shared' });
            await nango.deleteSyncVariant(variantProps('labels', 'shared'));
            assert.equal((await labels('shared')).length, 2, 'labels-mirror::shared still writes them');
            await nango.deleteSyncVariant(variantProps('labels-mirror', 'shared'));
            assert.deepEqual(await labels('shared'), []);
        });

        it('cleans up after a run of a variant deleted while it ran', async () => {
            await nango.createSyncVariant(variantProps('labels', 'slow'));
            github.state.delayMs = 1500;
            try {
                await nango.triggerSync(KEY, [{ name: 'labels', variant: 'slow' }], CONN);
                await eventually(() => github.requests.some((r) => r.url === '/repos/octo/slow/labels'), { what: 'the run to start' });
                assert.deepEqual(await nango.deleteSyncVariant(variantProps('labels', 'slow')), { success: true });
                await eventually(() => /removing what the run saved/.test(gateway.output), { what: 'the run to end' });
            } finally {
                github.state.delayMs = 0;
            }
            assert.deepEqual(await labels('slow'), []);
            assert.equal((await labels('v2')).length, 2);
        });

        it('sets a per-connection frequency that the scheduler follows, across a restart and a reload', async () => {
            const initial = await eventually(async () => {
                const s = await status('ticker');
                return s.latestExecutionStatus === 'SUCCESS' ? s : null;
            }, { what: 'the first run of ticker' });
            assert.equal(initial.frequency, 'every 1 hour');
            assert.equal(tickerRuns(), 1);

            const set = await nango.updateSyncConnectionFrequency(KEY, 'ticker', CONN, 'every 2 seconds');
            assert.deepEqual(set, { frequency: 'every 2 seconds' });
            await eventually(() => tickerRuns() >= 3, { what: 'runs every 2 seconds', timeoutMs: 20_000 });
            const every2s = await status('ticker');
            assert.equal(every2s.frequency, 'every 2 seconds');
            assert.equal((await status('labels')).frequency, 'every 1 hour', 'other syncs keep theirs');

            await gateway.restart();
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
            assert.equal((await status('ticker')).frequency, 'every 2 seconds', 'kept across a restart');
            let runs = tickerRuns();
            await eventually(() => tickerRuns() >= runs + 2, { what: 'runs after the restart', timeoutMs: 20_000 });

            await fs.writeFile(path.join(gateway.dir, 'nango.yaml'), CONFIG('every 2 hours'));
            const reload = await gateway.fetch('/admin/reload', { method: 'POST' });
            assert.equal(reload.status, 200, await reload.text());
            assert.equal((await status('ticker')).frequency, 'every 2 seconds', 'kept across a config change');
            runs = tickerRuns();
            await eventually(() => tickerRuns() >= runs + 2, { what: 'runs after the reload', timeoutMs: 20_000 });

            const reset = await nango.updateSyncConnectionFrequency(KEY, 'ticker', CONN, null);
            assert.deepEqual(reset, { frequency: 'every 2 hours' }, 'null goes back to the configured frequency');
            // A run that was already due still happens once; after it, the next is hours away.
            const settled = await eventually(async () => {
                const s = await status('ticker');
                const next = Date.parse(s.nextScheduledSyncAt) - Date.parse(s.finishedAt);
                return s.latestExecutionStatus !== 'RUNNING' && next > 60_000 ? { ...s, next } : null;
            }, { what: 'ticker back on its configured frequency', timeoutMs: 10_000 });
            assert.equal(settled.frequency, 'every 2 hours');
            assert.ok(Math.abs(settled.next - 2 * 3600_000) < 5_000, `next run two hours after the last (${settled.next} ms)`);
            runs = tickerRuns();
            await new Promise((r) => setTimeout(r, 4_000));
            assert.equal(tickerRuns(), runs, 'no more runs every 2 seconds');
        });

        it('sets the frequency of one variant only, and refuses what is not a frequency', async () => {
            const set = await nango.updateSyncConnectionFrequency(KEY, { name: 'labels', variant: 'v2' }, CONN, 'every 5 minutes');
            assert.deepEqual(set, { frequency: 'every 5 minutes' });
            assert.equal((await status({ name: 'labels', variant: 'v2' })).frequency, 'every 5 minutes');
            assert.equal((await status('labels')).frequency, 'every 1 hour');

            let r = await failureOf(nango.updateSyncConnectionFrequency(KEY, 'ticker', CONN, 'every 3 fortnights'));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'invalid_body');
            assert.match(r.body.error.message, /`every 3 fortnights` is not a frequency/);
            r = await failureOf(nango.updateSyncConnectionFrequency(KEY, 'ticker', 'nobody', 'every hour'));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'unknown_connection');
            r = await failureOf(nango.updateSyncConnectionFrequency(KEY, 'no-such-sync', CONN, 'every hour'));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'unknown_sync');
            r = await failureOf(nango.updateSyncConnectionFrequency(KEY, { name: 'labels', variant: 'nope' }, CONN, 'every hour'));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'unknown_sync');
            assert.match(r.body.error.message, /no variant `nope`/);
            const missing = await gateway.fetch('/sync/update-connection-frequency', {
                method: 'PUT',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ sync_name: 'ticker', provider_config_key: KEY, connection_id: CONN })
            });
            assert.equal(missing.status, 400);
            assert.match((await missing.json()).error.message, /`frequency` is required/);
        });

        it('answers the sync commands and the status for unknown connections, syncs and variants as Nango does', async () => {
            const commands = {
                trigger: (syncs, connectionId) => nango.triggerSync(KEY, syncs, connectionId),
                start: (syncs, connectionId) => nango.startSync(KEY, syncs, connectionId),
                pause: (syncs, connectionId) => nango.pauseSync(KEY, syncs, connectionId)
            };
            for (const [name, command] of Object.entries(commands)) {
                let r = await failureOf(command(['labels'], 'nobody'));
                assert.equal(r.status, 404, name);
                assert.equal(r.body.error.code, 'unknown_connection', name);
                assert.match(r.body.error.message, /nobody/, name);
                r = await failureOf(command(['no-such-sync'], CONN));
                assert.equal(r.status, 400, name);
                assert.equal(r.body.error.code, 'unknown_sync', name);
                assert.match(r.body.error.message, /no sync `no-such-sync`/, name);
                r = await failureOf(command(['flaky'], CONN));
                assert.equal(r.status, 400, name);
                assert.equal(r.body.error.code, 'unknown_sync', `${name}: an action is not a sync`);
                r = await failureOf(command([{ name: 'labels', variant: 'nope' }], CONN));
                assert.equal(r.status, 400, name);
                assert.equal(r.body.error.code, 'unknown_sync', name);
                assert.match(r.body.error.message, /no variant `nope`/, name);
                r = await failureOf(command([{ name: 'labels', variant: 'nope' }]));
                assert.equal(r.status, 400, name);
                assert.equal(r.body.error.code, 'no_syncs_found', `${name}: no connection has the variant`);
            }
            assert.equal((await nango.pauseSync(KEY, ['labels'])).status, 200, 'every connection with the sync');
            assert.equal((await status('labels')).status, 'PAUSED');

            const r = await failureOf(nango.syncStatus(KEY, ['labels'], 'nobody'));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'invalid_body');
            const { syncs } = await nango.syncStatus(KEY, ['no-such-sync', 'labels', { name: 'labels', variant: 'nope' }], CONN);
            assert.deepEqual(syncs.map((s) => [s.name, s.variant]), [['labels', 'base']], 'names that match nothing are left out');
        });

        /** Starts the flaky action asynchronously with these extra headers; returns its status URL. */
        async function triggerFlaky(failures, headers) {
            await nango.setMetadata(KEY, CONN, { attempts: [] });
            const res = await gateway.fetch('/action/trigger', {
                method: 'POST',
                headers: { 'content-type': 'application/json', 'provider-config-key': KEY, 'connection-id': CONN, ...headers },
                body: JSON.stringify({ action_name: 'flaky', input: { failures } })
            });
            assert.equal(res.status, 202, await res.clone().text());
            return (await res.json()).statusUrl;
        }

        /** The answer of GET /action/:id once the action has finished. */
        const outcome = (statusUrl) =>
            eventually(
                async () => {
                    const res = await gateway.fetch(statusUrl);
                    return res.status === 404 ? null : { status: res.status, body: await res.json() };
                },
                { what: 'the async action', timeoutMs: 30_000 }
            );

        const attempts = async () => (await nango.getMetadata(KEY, CONN)).attempts;

        it('retries a failed async action up to X-Max-Retries times, waiting longer each time', async () => {
            const statusUrl = await triggerFlaky(2, { 'x-async': 'true', 'x-max-retries': '2' });
            const done = await outcome(statusUrl);
            assert.equal(done.status, 200, JSON.stringify(done.body));
            assert.deepEqual(done.body, { attempts: 3 });
            assert.deepEqual(await nango.getAsyncActionResult({ statusUrl }), { attempts: 3 });
            const times = await attempts();
            assert.equal(times.length, 3);
            const [first, second] = [times[1] - times[0], times[2] - times[1]];
            assert.ok(first >= 1_400, `a back-off before the first retry (${first} ms)`);
            assert.ok(second >= 2_900, `a longer one before the second (${second} ms)`);
        });

        it('marks an async action failed once its retries are spent', async () => {
            const statusUrl = await triggerFlaky(5, { 'x-async': 'true', 'x-max-retries': '1' });
            const done = await outcome(statusUrl);
            assert.equal(done.status, 500);
            assert.equal(done.body.error.message, 'attempt 2 failed');
            await new Promise((r) => setTimeout(r, 3_500));
            assert.equal((await attempts()).length, 2, 'one try and one retry, no more');

            // Without the header, an async action is tried once.
            await nango.setMetadata(KEY, CONN, { attempts: [] });
            const started = await nango.triggerActionAsync(KEY, CONN, 'flaky', { failures: 1 });
            const once = await outcome(started.statusUrl);
            assert.equal(once.status, 500);
            assert.equal((await attempts()).length, 1);
        });

        it('refuses X-Max-Retries out of 0..5, and like Nango does not retry a synchronous call', async () => {
            for (const value of ['6', '-1', 'two', '1.5']) {
                const res = await gateway.fetch('/action/trigger', {
                    method: 'POST',
                    headers: { 'content-type': 'application/json', 'provider-config-key': KEY, 'connection-id': CONN, 'x-async': 'true', 'x-max-retries': value },
                    body: JSON.stringify({ action_name: 'flaky', input: { failures: 0 } })
                });
                assert.equal(res.status, 400, value);
                const { error } = await res.json();
                assert.equal(error.code, 'invalid_headers');
                assert.equal(error.message, 'X-Max-Retries must be a whole number from 0 to 5');
            }
            await nango.setMetadata(KEY, CONN, { attempts: [] });
            const res = await gateway.fetch('/action/trigger', {
                method: 'POST',
                headers: { 'content-type': 'application/json', 'provider-config-key': KEY, 'connection-id': CONN, 'x-max-retries': '3' },
                body: JSON.stringify({ action_name: 'flaky', input: { failures: 1 } })
            });
            assert.equal(res.status, 500);
            assert.equal((await res.json()).error.message, 'attempt 1 failed');
            assert.equal((await attempts()).length, 1);
        });
    });
}
