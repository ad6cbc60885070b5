// Configuration as code: `latchkey check`, Nango's own catalog, hot reload under load, and the
// keys a first start generates.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { Nango } from '@nangohq/node';
import yaml from 'js-yaml';

import { loopbackCatalog } from '../support/catalog.mjs';
import { createPostgresDatabase } from '../support/db.mjs';
import { BIN, REPO, startGateway } from '../support/gateway.mjs';
import { startUpstream } from '../support/upstream.mjs';

/**
 * Replaces a file the way deployment tools and most editors do, by renaming a complete copy
 * over it: a reader never sees it half written (a plain write truncates first, and a reload
 * that reads in between sees an empty configuration).
 */
async function replaceFile(file, text) {
    const temporary = `${file}.${process.pid}.tmp`;
    await fs.writeFile(temporary, text);
    await fs.rename(temporary, file);
}

const run = promisify(execFile);
const NANGO_CATALOG = path.join(REPO, 'tests/node_modules/@nangohq/providers/providers.yaml');

/** Runs `latchkey <args>`; resolves to { code, stdout, stderr } whatever the exit code. */
async function latchkey(args, options = {}) {
    try {
        const { stdout, stderr } = await run(BIN, args, { ...options, env: { PATH: process.env.PATH, ...(options.env || {}) } });
        return { code: 0, stdout, stderr };
    } catch (e) {
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
}

async function tempDir() {
    return fs.mkdtemp(path.join(os.tmpdir(), 'latchkey-config-'));
}

describe('latchkey check', () => {
    it('loads every entry of the catalog in @nangohq/providers with zero problems, aliases resolved', async () => {
        const dir = await tempDir();
        await fs.writeFile(path.join(dir, 'nango.yaml'), `catalogs:\n  - ${NANGO_CATALOG}\n`);
        const entries = Object.keys(yaml.load(await fs.readFile(NANGO_CATALOG, 'utf8')));
        // An empty directory as Latchkey's own catalog, so that every provider comes from Nango's file.
        await fs.mkdir(path.join(dir, 'empty'));
        const r = await latchkey(['check', '--config', path.join(dir, 'nango.yaml'), '--catalog-dir', path.join(dir, 'empty')]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, new RegExp(`ok \\(${entries.length} providers in the catalog`));
        assert.ok(entries.length >= 981, `the package has ${entries.length} entries`);
    });

    it('prints every problem with file, line, path and hint, and exits 1', async () => {
        const dir = await tempDir();
        const config = [
            'integrations:',
            '  github-prod:',
            '    provider: github',
            '    client_id: abc',
            '    client_secret: ghs_literal_secret',
            '  mystery:',
            '    provider: not-a-provider',
            '  env-missing:',
            '    provider: github',
            '    client_secret: ${env:LATCHKEY_TEST_SURELY_UNSET}',
            ''
        ].join('\n');
        await fs.writeFile(path.join(dir, 'nango.yaml'), config);
        const r = await latchkey(['check', '--config', path.join(dir, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers')]);
        assert.equal(r.code, 1);
        const file = path.join(dir, 'nango.yaml');
        assert.ok(r.stdout.includes(`${file}:5: /integrations/github-prod/client_secret: a secret is written here literally`), r.stdout);
        assert.ok(r.stdout.includes('${env:GITHUB_PROD_CLIENT_SECRET}'), 'the hint says what to write instead');
        assert.ok(r.stdout.includes(`${file}:7: /integrations/mystery/provider: unknown provider \`not-a-provider\``), r.stdout);
        assert.ok(r.stdout.includes(`${file}:10: /integrations/env-missing/client_secret: the environment variable \`LATCHKEY_TEST_SURELY_UNSET\` is not set`), r.stdout);
        assert.match(r.stdout, /3 problem\(s\) found/);
    });

    it('reports schema problems in catalog entries with the nearest allowed key', async () => {
        const dir = await tempDir();
        await fs.mkdir(path.join(dir, 'providers'));
        await fs.writeFile(
            path.join(dir, 'providers', 'broken.yaml'),
            'display_name: Broken\ndocs: https://x.example\nauth_mode: API_KEY\nproxy:\n  base_url: https://${connectionConfig.subdomian}.x.example\n  hedaers:\n    x: y\n'
        );
        await fs.writeFile(path.join(dir, 'nango.yaml'), '');
        const r = await latchkey(['check', '--config', path.join(dir, 'nango.yaml')]);
        assert.equal(r.code, 1);
        assert.ok(r.stdout.includes('broken.yaml:4: /proxy: unknown key `hedaers` (did you mean `headers`?)'), r.stdout);
        await fs.writeFile(
            path.join(dir, 'providers', 'broken.yaml'),
            'display_name: Broken\ndocs: https://x.example\nauth_mode: API_KEY\nproxy:\n  base_url: https://${connectionConfig.subdomian}.x.example\n'
        );
        const again = await latchkey(['check', '--config', path.join(dir, 'nango.yaml')]);
        assert.ok(again.stdout.includes('broken.yaml:5: /proxy/base_url: the template names connection config `subdomian`, which the entry does not declare'), again.stdout);
    });

    it('accepts a Nango nango.yaml unchanged', async () => {
        const dir = await tempDir();
        const nangoYaml = [
            'integrations:',
            '  hubspot-crm:',
            '    syncs:',
            '      contacts:',
            '        runs: every 30 minutes',
            '        sync_type: full',
            '        track_deletes: true',
            '        output: Contact',
            '        endpoint: GET /contacts',
            '    actions:',
            '      create-contact:',
            '        endpoint: POST /contacts',
            '        input: CreateContactInput',
            '        output: Contact',
            '    on-events:',
            '      post-connection-creation: [register-webhooks]',
            'models:',
            '  Contact:',
            '    id: string',
            '    email: string | null',
            '  CreateContactInput:',
            '    email: string',
            ''
        ].join('\n');
        await fs.writeFile(path.join(dir, 'nango.yaml'), nangoYaml);
        const r = await latchkey(['check', '--config', path.join(dir, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers')]);
        assert.equal(r.code, 0, r.stdout);
        assert.match(r.stdout, /0 integrations declared, 2 models/);
    });
});

describe('hot reload', () => {
    let upstream, gateway, nango;

    before(async () => {
        upstream = await startUpstream();
        gateway = await startGateway({
            config: 'catalogs: [test-catalog.yaml]\nintegrations:\n  acme:\n    provider: acme-apikey\n    display_name: Version 0\n',
            files: { 'test-catalog.yaml': loopbackCatalog(upstream.url) }
        });
        nango = new Nango({ secretKey: gateway.secretKey, host: gateway.url });
        await gateway.fetch('/connections', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ provider_config_key: 'acme', connection_id: 'c1', credentials: { type: 'API_KEY', apiKey: 'k' } })
        });
    });

    after(async () => {
        await gateway?.stop();
        await upstream?.close();
    });

    it('reloads 50 times during a steady stream of proxy requests with zero failures', async () => {
        let stop = false;
        let sent = 0;
        const failures = [];
        const stream = (async () => {
            while (!stop) {
                const batch = Array.from({ length: 8 }, async () => {
                    try {
                        const r = await nango.get({ providerConfigKey: 'acme', connectionId: 'c1', endpoint: '/ping' });
                        if (r.status !== 200) failures.push(r.status);
                    } catch (e) {
                        failures.push(e.response?.status ?? e.message);
                    }
                    sent += 1;
                });
                await Promise.all(batch);
            }
        })();
        const configPath = path.join(gateway.dir, 'nango.yaml');
        const base = await fs.readFile(configPath, 'utf8');
        let lastVersion = 0;
        for (let i = 1; i <= 50; i++) {
            // Alternate the three triggers: a file change, SIGHUP and the admin endpoint.
            const next = base.replace('Version 0', `Version ${i}`);
            await replaceFile(configPath, next);
            if (i % 3 === 1) {
                gateway.child.kill('SIGHUP');
            } else if (i % 3 === 2) {
                const r = await gateway.fetch('/admin/reload', { method: 'POST' });
                assert.equal(r.status, 200);
            }
            const deadline = Date.now() + 20000;
            for (;;) {
                const { data } = await nango.getIntegration({ uniqueKey: 'acme' });
                if (data.display_name === `Version ${i}`) break;
                assert.ok(Date.now() < deadline, `reload ${i} was not applied`);
                await new Promise((r) => setTimeout(r, 20));
            }
            const config = await (await gateway.fetch('/admin/config')).json();
            assert.ok(config.version > lastVersion);
            lastVersion = config.version;
        }
        stop = true;
        await stream;
        assert.deepEqual(failures, []);
        assert.ok(sent > 100, `only ${sent} requests were sent`);
        assert.ok(lastVersion > 50, 'every reload made a new version');
    });

    it('keeps serving the old snapshot when a change is invalid, and reports it', async () => {
        const configPath = path.join(gateway.dir, 'nango.yaml');
        const good = await fs.readFile(configPath, 'utf8');
        const before = await (await gateway.fetch('/admin/config')).json();
        await replaceFile(configPath, good.replace('provider: acme-apikey', 'provider: acme-nope'));
        const r = await gateway.fetch('/admin/reload', { method: 'POST' });
        assert.equal(r.status, 400);
        const body = await r.json();
        assert.equal(body.error.code, 'invalid_config');
        assert.match(body.error.payload[0].message, /unknown provider `acme-nope`/);
        assert.equal(body.error.payload[0].line, 4);

        const status = await (await gateway.fetch('/admin/config')).json();
        assert.equal(status.version, before.version, 'the old snapshot still serves');
        assert.match(status.last_reload.error[0].message, /acme-nope/);
        const proxied = await nango.get({ providerConfigKey: 'acme', connectionId: 'c1', endpoint: '/still-works' });
        assert.equal(proxied.status, 200);

        await replaceFile(configPath, good);
        const fixed = await gateway.fetch('/admin/reload', { method: 'POST' });
        assert.equal(fixed.status, 200);
        const cleared = await (await gateway.fetch('/admin/config')).json();
        assert.equal(cleared.last_reload.error, null);
    });
});

describe('first start', () => {
    it('generates, stores and prints the secret key once, and an encryption key file of mode 0600', async () => {
        const gateway = await startGateway({ secretKey: 'unused', env: { LATCHKEY_SECRET_KEY: '', LATCHKEY_ENCRYPTION_KEY: '' } });
        try {
            const printed = gateway.output.match(/Generated the API secret key:\s+(\S+)/);
            assert.ok(printed, gateway.output);
            const key = printed[1];
            const ok = await fetch(`${gateway.url}/integrations`, { headers: { authorization: `Bearer ${key}` } });
            assert.equal(ok.status, 200);
            const stat = await fs.stat(path.join(gateway.dir, '.latchkey/encryption.key'));
            assert.equal(stat.mode & 0o777, 0o600);
            assert.match(gateway.output, /generated a key in/);
            assert.ok(!gateway.output.includes(await fs.readFile(path.join(gateway.dir, '.latchkey/encryption.key'), 'utf8')), 'the key is never logged');

            gateway.output = '';
            await gateway.restart();
            assert.ok(!gateway.output.includes(key), 'the secret key is printed only once');
            const again = await fetch(`${gateway.url}/integrations`, { headers: { authorization: `Bearer ${key}` } });
            assert.equal(again.status, 200, 'the stored key survives a restart');
        } finally {
            await gateway.stop();
        }
    });

    it('refuses to start on PostgreSQL without an encryption key, saying how to make one', async () => {
        const database = await createPostgresDatabase();
        try {
            const dir = await tempDir();
            await fs.writeFile(path.join(dir, 'nango.yaml'), '');
            const r = await latchkey(['serve', '--config', path.join(dir, 'nango.yaml'), '--listen', '127.0.0.1:0'], {
                env: { DATABASE_URL: database.url, LATCHKEY_DATA_DIR: path.join(dir, '.latchkey') }
            });
            assert.equal(r.code, 1);
            assert.match(r.stderr, /LATCHKEY_ENCRYPTION_KEY is required with PostgreSQL/);
            assert.match(r.stderr, /latchkey generate-key/);
        } finally {
            await database.drop();
        }
    });

    it('refuses to start with a key that cannot open the stored credentials', async () => {
        const gateway = await startGateway({ config: '' });
        try {
            const created = await gateway.fetch('/integrations', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ provider: 'github', unique_key: 'gh', credentials: { type: 'OAUTH2', client_id: 'a', client_secret: 'b' } })
            });
            assert.equal(created.status, 200);
            const r = await latchkey(['serve', '--config', path.join(gateway.dir, 'nango.yaml'), '--listen', '127.0.0.1:0', '--catalog-dir', path.join(REPO, 'providers')], {
                env: {
                    DATABASE_URL: gateway.databaseUrl,
                    LATCHKEY_ENCRYPTION_KEY: Buffer.alloc(32, 9).toString('base64'),
                    LATCHKEY_SECRET_KEY: 'x'
                }
            });
            assert.equal(r.code, 1);
            assert.match(r.stderr, /sealed with encryption key\(s\) [0-9a-f]{16}, which are not configured/);
        } finally {
            await gateway.stop();
        }
    });

    it('migrates a database with `latchkey migrate`', async () => {
        const database = await createPostgresDatabase();
        try {
            // The local server trusts every login, so a password in the URL is accepted and ignored.
            const url = new URL(database.url);
            url.password = 'hunter2';
            const r = await latchkey(['migrate'], { env: { DATABASE_URL: url.toString() } });
            assert.equal(r.code, 0, r.stderr);
            assert.match(r.stdout, /migrations applied/);
            assert.ok(!(r.stdout + r.stderr).includes('hunter2'), 'the password of the URL is never printed');
        } finally {
            await database.drop();
        }
    });
});
