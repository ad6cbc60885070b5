// Helpers for driving syncs and actions through @nangohq/node.
import assert from 'node:assert/strict';

import { eventually } from './webhooks.mjs';

/** The status and body of a failed SDK call. */
export async function failureOf(promise) {
    try {
        await promise;
    } catch (e) {
        return { status: e.response?.status, body: e.response?.data };
    }
    assert.fail('expected the call to fail');
}

/** The status of one sync instance (a name, or `{name, variant}`) of a connection. */
export async function syncStatus(nango, providerConfigKey, connectionId, sync) {
    const { syncs } = await nango.syncStatus(providerConfigKey, [sync], connectionId);
    assert.equal(syncs.length, 1, `one status for ${JSON.stringify(sync)}: ${JSON.stringify(syncs)}`);
    return syncs[0];
}

/** Triggers a sync instance and waits until a run that started after the trigger has finished. */
export async function runSync(nango, providerConfigKey, connectionId, sync, mode) {
    const before = (await syncStatus(nango, providerConfigKey, connectionId, sync)).finishedAt;
    await nango.triggerSync(providerConfigKey, [sync], connectionId, mode);
    return eventually(
        async () => {
            const status = await syncStatus(nango, providerConfigKey, connectionId, sync);
            return status.latestExecutionStatus !== 'RUNNING' && status.finishedAt && status.finishedAt !== before ? status : null;
        },
        { what: `a run of ${JSON.stringify(sync)}` }
    );
}
