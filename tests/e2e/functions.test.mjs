// Functions end to end: the example GitHub functions of functions/ run in the sandbox against a
// GitHub-like upstream on loopback, driven through @nangohq/node; and every limit of the
// sandbox ends its run with a clear error while the gateway keeps serving.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Nango } from '@nangohq/node';

import { databases } from '../support/db.mjs';
import { BIN, REPO, startGateway } from '../support/gateway.mjs';
import { GITHUB_TOKEN, githubCatalog, importGithubConnection, startGithub } from '../support/github.mjs';
import { failureOf, runSync, syncStatus } from '../support/syncs.mjs';
import { startReceiver } from '../support/webhooks.mjs';

const SIGNING_SECRET = 'whsec-functions-0123456789';

const CONFIG = (receiverUrl) => `catalogs: [test-catalog.yaml]
integrations:
  github:
    provider: github-loopback
    syncs:
      issues:
        runs: every 1 hour
        output: GithubIssue
        sync_type: incremental
        auto_start: false
      labels:
        runs: every 1 hour
        output: GithubLabel
        auto_start: false
    actions:
      create-issue:
        output: CreatedIssue
      endless: {}
      bomb: {}
      huge: {}
      throws: {}
      broken-later: {}
      fresh: {}
      wasm-user:
        file: ${path.join(REPO, 'plugins/examples/wasm-user/user.wat')}
      native-user:
        file: ${path.join(path.dirname(BIN), 'liblatchkey_example_native_user.so')}
webhooks:
  primary_url: ${receiverUrl}/hooks
  signing_secret: \${env:HOOK_SECRET}
models:
  GithubIssue:
    id: string
  GithubLabel:
    id: string
  CreatedIssue:
    id: string
`;

// Functions that break the rules, one per limit.
const LIMIT_FUNCTIONS = {
    'functions/github/actions/endless.js': 'export default async function run() { for (;;) {} }\n',
    'functions/github/actions/bomb.js':
        'export default async function run() { const keep = []; for (let i = 0; ; i++) keep.push(new Array(100000).fill(i)); }\n',
    'functions/github/actions/huge.ts': "export default async function run(): Promise<string> { return 'x'.repeat(3 * 1024 * 1024); }\n",
    'functions/github/actions/throws.ts':
        "export default async function run(nango: any, input: { why: string }) { throw new Error(`refused: ${input.why}`); }\n",
    'functions/github/actions/broken-later.ts': 'export default async function run() { return { version: 1 }; }\n',
    // What one run leaves behind, in the globals and in the SDK's module, and what must differ
    // from run to run although every run starts from the same snapshot of the engine.
    'functions/github/actions/fresh.js': `import { ActionError } from 'nango';
export default async function run() {
    const runs = globalThis.runsSeen ?? 0;
    globalThis.runsSeen = runs + 1;
    const patched = ActionError.prototype.leftBehind === true;
    ActionError.prototype.leftBehind = true;
    return { runs, patched, random: Math.random(), timeOrigin: performance.timeOrigin, now: performance.now() };
}
`
};

async function exampleFunctions() {
    const files = {};
    for (const name of ['syncs/issues.ts', 'syncs/labels.ts', 'actions/create-issue.ts']) {
        files[`functions/github/${name}`] = await fs.readFile(path.join(REPO, 'functions/github', name), 'utf8');
    }
    return files;
}

/** Every record of a model, page by page through listRecords. */
async function allRecords(nango, model, extra = {}) {
    const records = [];
    let cursor;
    do {
        const page = await nango.listRecords({ providerConfigKey: 'github', connectionId: 'octo', model, limit: 40, cursor, ...extra });
        records.push(...page.records);
        cursor = page.next_cursor;
    } while (cursor);
    return records;
}

/** Runs `latchkey run …` against the test gateway's database and configuration. */
function latchkeyRun(gateway, args) {
    return new Promise((resolve) => {
        execFile(
            BIN,
            ['run', ...args, '--config', path.join(gateway.dir, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers')],
            {
                cwd: gateway.dir,
                env: {
                    PATH: process.env.PATH,
                    DATABASE_URL: gateway.databaseUrl,
                    LATCHKEY_DATA_DIR: path.join(gateway.dir, '.latchkey'),
                    LATCHKEY_ENCRYPTION_KEY: gateway.encryptionKey,
                    LATCHKEY_SECRET_KEY: gateway.secretKey,
                    LATCHKEY_LOG: 'warn',
                    ...gateway.env
                }
            },
            (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr })
        );
    });
}

async function waitFor(what, check, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 200));
    }
}

for (const db of databases()) {
    describe(`functions on ${db}`, () => {
        let github, gateway, nango, receiver;

        before(async () => {
            github = await startGithub();
            receiver = await startReceiver();
            gateway = await startGateway({
                db,
                config: CONFIG(receiver.url),
                files: { 'test-catalog.yaml': githubCatalog(github.url), ...(await exampleFunctions()), ...LIMIT_FUNCTIONS },
                env: { LATCHKEY_FUNCTION_TIMEOUT_MS: '4000', LATCHKEY_FUNCTION_MEMORY_MB: '64', LATCHKEY_SYNC_STALE_MS: '3000', HOOK_SECRET: SIGNING_SECRET }
            });
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url, webhookSigningKey: SIGNING_SECRET });
            await importGithubConnection(gateway, 'github', 'octo');
            await nango.setMetadata('github', 'octo', { owner: 'octo', repo: 'hello' });
        });

        after(async () => {
            await gateway?.stop();
            await github?.close();
            await receiver?.close();
        });

        it('runs the create-issue action through triggerAction, returning its output as is', async () => {
            const created = await nango.triggerAction('github', 'octo', 'create-issue', {
                owner: 'octo',
                repo: 'hello',
                title: 'From a function',
                labels: ['bug']
            });
            assert.equal(created.number, 1);
            assert.match(created.url, /octo\/hello\/issues\/1$/);
            assert.equal(github.state.issues[0].title, 'From a function');
            assert.deepEqual(github.state.issues[0].labels, [{ name: 'bug' }]);
        });

        it('retries a failing upstream as the function asked', async () => {
            github.state.failNext = 1;
            const created = await nango.triggerAction('github', 'octo', 'create-issue', { owner: 'octo', repo: 'hello', title: 'Retried' });
            assert.equal(created.number, 2);
        });

        it('returns an ActionError with its payload', async () => {
            const { status, body } = await failureOf(nango.triggerAction('github', 'octo', 'create-issue', { owner: 'octo', repo: 'hello' }));
            assert.equal(status, 500);
            assert.equal(body.error.code, 'action_script_runtime_error');
            assert.deepEqual(body.error.payload, { message: 'a title is required', field: 'title' });
        });

        it('runs an action asynchronously with X-Async and serves its result later', async () => {
            const started = await gateway.fetch('/action/trigger', {
                method: 'POST',
                headers: { 'content-type': 'application/json', 'provider-config-key': 'github', 'connection-id': 'octo', 'x-async': 'true' },
                body: JSON.stringify({ action_name: 'create-issue', input: { owner: 'octo', repo: 'hello', title: 'Later' } })
            });
            assert.equal(started.status, 202);
            const { id, statusUrl } = await started.json();
            assert.equal(statusUrl, `/action/${id}`);
            const result = await waitFor('the async action', async () => {
                const res = await gateway.fetch(statusUrl);
                return res.status === 200 ? res.json() : null;
            });
            assert.equal(result.number, 3);
            const hook = await waitFor('the async action webhook', async () =>
                receiver.received.find((r) => r.body?.type === 'async_action' && r.body.payload.id === id)
            );
            assert.deepEqual(hook.body, { type: 'async_action', from: 'nango', connectionId: 'octo', providerConfigKey: 'github', payload: { id, statusUrl } });
            assert.ok(nango.verifyIncomingWebhookRequest(hook.raw, hook.headers), 'signed');
        });

        it('refuses unknown actions and connections', async () => {
            let r = await failureOf(nango.triggerAction('github', 'octo', 'no-such-action', {}));
            assert.equal(r.status, 404);
            assert.equal(r.body.error.code, 'unknown_action');
            r = await failureOf(nango.triggerAction('github', 'nobody', 'create-issue', {}));
            assert.equal(r.status, 404);
        });

        it('runs functions written in WebAssembly and as native libraries through the same host API', async () => {
            const wasm = await nango.triggerAction('github', 'octo', 'wasm-user', {});
            assert.equal(wasm.ok.status, 200);
            assert.equal(wasm.ok.data.login, 'octocat');
            const native = await nango.triggerAction('github', 'octo', 'native-user', { hello: 'native' });
            assert.deepEqual(native, { login: 'octocat', runtime: 'native', input: { hello: 'native' } });
            const user = github.requests.filter((r) => r.url === '/user');
            assert.equal(user.length, 2);
            assert.ok(user.every((r) => r.headers.authorization === `Bearer ${GITHUB_TOKEN}`), 'credentials are injected for every runtime');
        });

        it('stops an endless loop at the time limit and keeps serving', async () => {
            const { status, body } = await failureOf(nango.triggerAction('github', 'octo', 'endless', {}));
            assert.equal(status, 500);
            assert.equal(body.error.code, 'execution_timeout');
            assert.match(body.error.message, /time limit/);
            assert.equal((await gateway.fetch('/health')).status, 200);
            assert.match(gateway.output, /time limit/, 'the failure is logged');
        });

        it('stops an allocation bomb at the memory limit', async () => {
            const { status, body } = await failureOf(nango.triggerAction('github', 'octo', 'bomb', {}));
            assert.equal(status, 500);
            assert.equal(body.error.code, 'out_of_memory');
            assert.match(body.error.message, /memory limit of 64 MiB/);
        });

        it('refuses an output over 2 MB', async () => {
            const { status, body } = await failureOf(nango.triggerAction('github', 'octo', 'huge', {}));
            assert.equal(status, 500);
            assert.equal(body.error.code, 'script_output_too_large');
            assert.match(body.error.message, /limit of 2097152 bytes/);
        });

        it('reports what a throwing function threw', async () => {
            const { status, body } = await failureOf(nango.triggerAction('github', 'octo', 'throws', { why: 'no reason' }));
            assert.equal(status, 500);
            assert.equal(body.error.message, 'refused: no reason');
            // And the sandbox is still fine for the next run.
            const created = await nango.triggerAction('github', 'octo', 'create-issue', { owner: 'octo', repo: 'hello', title: 'After' });
            assert.ok(created.number > 3);
        });

        it('starts every run afresh: nothing one leaves behind reaches the next, and its clock and randomness are its own', async () => {
            const before = Date.now();
            const first = await nango.triggerAction('github', 'octo', 'fresh', {});
            const second = await nango.triggerAction('github', 'octo', 'fresh', {});
            for (const run of [first, second]) {
                assert.equal(run.runs, 0);
                assert.equal(run.patched, false);
                assert.ok(run.timeOrigin >= before - 1 && run.timeOrigin <= Date.now() + 1, `timeOrigin ${run.timeOrigin} is the run's start`);
                assert.ok(run.now >= 0 && run.now < 4000, `performance.now() ${run.now} counts from the run's start`);
            }
            assert.ok(second.timeOrigin >= first.timeOrigin);
            assert.notEqual(first.random, second.random);
        });

        it('syncs issues page by page, then only what changed, readable through listRecords', async () => {
            github.addIssues(120, new Date(Date.now() - 60_000).toISOString());
            const first = await runSync(nango, 'github', 'octo', 'issues');
            assert.equal(first.latestExecutionStatus, 'SUCCESS', JSON.stringify(first));
            assert.equal(first.type, 'INCREMENTAL', 'after a successful run the next one is incremental');
            const total = github.state.issues.length;
            assert.equal(first.recordCount.GithubIssue, total);
            assert.deepEqual(first.latestResult.GithubIssue, { added: total, updated: 0, deleted: 0 });
            const pages = github.requests.filter((r) => r.url.startsWith('/repos/octo/hello/issues?'));
            assert.ok(pages.length >= 3, `paginated (${pages.length} pages)`);
            assert.ok(pages.every((r) => r.headers.authorization === `Bearer ${GITHUB_TOKEN}`), 'the token is injected');

            const hook = await waitFor('the sync webhook', async () =>
                receiver.received.find((r) => r.body?.type === 'sync' && r.body.syncName === 'issues')
            );
            assert.ok(nango.verifyIncomingWebhookRequest(hook.raw, hook.headers), 'signed');
            assert.equal(hook.body.model, 'GithubIssue');
            assert.equal(hook.body.success, true);
            assert.equal(hook.body.syncType, 'INITIAL');
            assert.deepEqual(hook.body.responseResults, { added: total, updated: 0, deleted: 0 });
            const sinceHook = await allRecords(nango, 'GithubIssue', { modifiedAfter: hook.body.modifiedAfter });
            assert.equal(sinceHook.length, total, 'modifiedAfter reads what the run changed');

            const stored = await allRecords(nango, 'GithubIssue');
            assert.equal(stored.length, total);
            assert.equal(new Set(stored.map((r) => r.id)).size, total, 'no duplicates across pages');
            assert.ok(stored.every((r) => r._nango_metadata.last_action === 'ADDED'));
            const lastCursor = stored[stored.length - 1]._nango_metadata.cursor;

            // One issue changes, two are new, the rest is untouched.
            const changed = github.state.issues[10];
            changed.title = 'Renamed';
            changed.updated_at = new Date().toISOString();
            github.addIssues(2);
            const requestsBefore = github.requests.length;
            const second = await runSync(nango, 'github', 'octo', 'issues');
            assert.equal(second.latestExecutionStatus, 'SUCCESS');
            assert.deepEqual(second.latestResult.GithubIssue, { added: 2, updated: 1, deleted: 0 });
            const incremental = github.requests.slice(requestsBefore).find((r) => r.url.startsWith('/repos/octo/hello/issues?'));
            assert.match(incremental.url, /since=/, 'the second run asks only for what changed');

            const news = await allRecords(nango, 'GithubIssue', { cursor: lastCursor });
            assert.equal(news.length, 3);
            const renamed = news.find((r) => r.id === String(changed.id));
            assert.equal(renamed.title, 'Renamed');
            assert.equal(renamed._nango_metadata.last_action, 'UPDATED');
            const added = await allRecords(nango, 'GithubIssue', { filter: 'added', cursor: lastCursor });
            assert.equal(added.length, 2);
            const changes = await allRecords(nango, 'GithubIssue', { filter: 'added,updated', cursor: lastCursor });
            assert.deepEqual(changes.map((r) => r.id), news.map((r) => r.id), 'two actions merge in change order');
            const updatedOrDeleted = await allRecords(nango, 'GithubIssue', { filter: 'updated,deleted' });
            assert.deepEqual(updatedOrDeleted.map((r) => r.id), [String(changed.id)]);
            const logs = await waitFor('the function logs', async () => {
                const res = await gateway.fetch('/logs?type=function&integration=github&connection=octo&limit=1000');
                const { logs } = await res.json();
                return logs.some((l) => /saved \d+ issues of octo\/hello/.test(l.message)) ? logs : null;
            });
            const line = logs.find((l) => /saved \d+ issues/.test(l.message));
            assert.match(line.operation, /^sync:issues#\d+$/);
            assert.ok(logs.some((l) => l.level === 'error' && /refused: no reason/.test(l.message)), 'failures are logged too');
            const byId = await nango.listRecords({ providerConfigKey: 'github', connectionId: 'octo', model: 'GithubIssue', ids: [String(changed.id)] });
            assert.equal(byId.records.length, 1);
        });

        it('tracks deleted labels in a full sync', async () => {
            github.state.labels = [
                { id: 1, name: 'bug', color: 'red', description: null },
                { id: 2, name: 'docs', color: 'blue', description: null },
                { id: 3, name: 'good first issue', color: 'green', description: 'easy' }
            ];
            const first = await runSync(nango, 'github', 'octo', 'labels');
            assert.equal(first.latestExecutionStatus, 'SUCCESS', JSON.stringify(first));
            assert.equal((await allRecords(nango, 'GithubLabel')).length, 3);
            github.state.labels.splice(1, 1);
            const second = await runSync(nango, 'github', 'octo', 'labels');
            assert.deepEqual(second.latestResult.GithubLabel, { added: 0, updated: 0, deleted: 1 });
            assert.equal(second.recordCount.GithubLabel, 2);
            const deleted = await allRecords(nango, 'GithubLabel', { filter: 'deleted' });
            assert.deepEqual(deleted.map((r) => [r.id, r._nango_metadata.last_action]), [['2', 'DELETED']]);
            assert.ok(deleted[0]._nango_metadata.deleted_at);
        });

        it('pauses and starts schedules, and a full resync starts over', async () => {
            await nango.startSync('github', ['labels'], 'octo');
            await waitFor('the started sync', async () => (await syncStatus(nango, 'github', 'octo', 'labels')).nextScheduledSyncAt);
            await nango.pauseSync('github', ['labels'], 'octo');
            await waitFor('the paused sync', async () => (await syncStatus(nango, 'github', 'octo', 'labels')).status === 'PAUSED');
            assert.equal((await syncStatus(nango, 'github', 'octo', 'issues')).status, 'PAUSED', 'issues does not start automatically');
            const full = await runSync(nango, 'github', 'octo', 'issues', true);
            assert.equal(full.latestExecutionStatus, 'SUCCESS');
            assert.equal(full.recordCount.GithubIssue, github.state.issues.length);
            const r = await failureOf(nango.triggerSync('github', ['no-such-sync'], 'octo'));
            assert.equal(r.status, 400);
            assert.equal(r.body.error.code, 'unknown_sync');
        });

        it('marks a run killed with SIGKILL failed and runs it again, losing and doubling nothing', async () => {
            const issuePages = () => github.requests.filter((r) => r.method === 'GET' && r.url.startsWith('/repos/octo/hello/issues')).length;
            github.addIssues(400);
            github.state.delayMs = 300;
            const pagesBefore = issuePages();
            await nango.startSync('github', ['issues'], 'octo');
            await waitFor('a run half done', async () => issuePages() >= pagesBefore + 3);
            gateway.child.kill('SIGKILL');
            await gateway.exited;
            github.state.delayMs = 0;
            await gateway.restart();
            nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
            const rerun = await waitFor('the run again', async () => {
                const status = await syncStatus(nango, 'github', 'octo', 'issues');
                return status.latestExecutionStatus === 'SUCCESS' && status.recordCount.GithubIssue === github.state.issues.length ? status : null;
            });
            await nango.pauseSync('github', ['issues'], 'octo');
            const stored = await allRecords(nango, 'GithubIssue');
            assert.equal(stored.length, github.state.issues.length);
            assert.equal(new Set(stored.map((r) => r.id)).size, stored.length, 'no record twice');
            assert.equal(rerun.recordCount.GithubIssue, github.state.issues.length);
            assert.match(gateway.output, /marked failed/);
        });

        it('runs a function once from the command line', async () => {
            github.state.labels.push({ id: 9, name: 'cli', color: 'gray', description: null });
            const dry = await latchkeyRun(gateway, ['github', 'labels', '--connection', 'octo']);
            assert.equal(dry.code, 0, dry.stderr);
            const report = JSON.parse(dry.stdout);
            assert.deepEqual(report.records.GithubLabel.map((l) => l.name), ['bug', 'good first issue', 'cli']);
            assert.equal((await allRecords(nango, 'GithubLabel', { filter: 'added,updated' })).length, 2, 'a dry run saves nothing');

            const saved = await latchkeyRun(gateway, ['github', 'labels', '--connection', 'octo', '--save']);
            assert.equal(saved.code, 0, saved.stderr);
            assert.deepEqual(JSON.parse(saved.stdout).saved.GithubLabel, { added: 1, updated: 0, deleted: 0 });

            const action = await latchkeyRun(gateway, ['github', 'create-issue', '--connection', 'octo', '--input', '{"owner":"octo","repo":"hello","title":"CLI"}']);
            assert.equal(action.code, 0, action.stderr);
            assert.equal(JSON.parse(action.stdout).output.url.includes('/issues/'), true);

            const failed = await latchkeyRun(gateway, ['github', 'throws', '--connection', 'octo', '--input', '{"why":"cli"}']);
            assert.notEqual(failed.code, 0);
            assert.match(failed.stderr, /refused: cli/);
        });

        it('keeps the previous version of a function that no longer compiles', async () => {
            const file = path.join(gateway.dir, 'functions/github/actions/broken-later.ts');
            await fs.writeFile(file, 'export default async function run() {\n  return { version: 2 };\n}\n');
            await waitFor('the new version', async () => (await nango.triggerAction('github', 'octo', 'broken-later', {})).version === 2);
            await fs.writeFile(file, 'export default async function run() {\n  return { version: 3 ;\n}\n');
            const reload = await gateway.fetch('/admin/reload', { method: 'POST' });
            const text = await reload.text();
            assert.notEqual(reload.status, 200, text);
            assert.match(text, /broken-later\.ts:2/, 'the problem names the file and line');
            assert.equal((await nango.triggerAction('github', 'octo', 'broken-later', {})).version, 2);
        });
    });
}

describe('latchkey check', () => {
    it('reports a function that does not compile with its file and line', async () => {
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'latchkey-check-'));
        try {
            await fs.mkdir(path.join(dir, 'functions/github/actions'), { recursive: true });
            await fs.writeFile(
                path.join(dir, 'nango.yaml'),
                'integrations:\n  github:\n    provider: github\n    actions:\n      bad:\n        output: X\n'
            );
            await fs.writeFile(path.join(dir, 'functions/github/actions/bad.ts'), 'export default async function run() {\n  const x: number = ;\n}\n');
            const result = await new Promise((resolve) =>
                execFile(BIN, ['check', '--config', path.join(dir, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers')], (error, stdout) =>
                    resolve({ code: error ? error.code : 0, stdout })
                )
            );
            assert.notEqual(result.code, 0);
            assert.match(result.stdout, /functions\/github\/actions\/bad\.ts:2: column \d+/);
        } finally {
            await fs.rm(dir, { recursive: true, force: true });
        }
    });
});
