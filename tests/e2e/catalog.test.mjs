// Latchkey's own catalog against the entries of the same name in @nangohq/providers: the fields
// that must agree do, or the entry says why not.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

import { BIN, REPO } from '../support/gateway.mjs';

const run = promisify(execFile);
const NANGO_CATALOG = path.join(REPO, 'tests/node_modules/@nangohq/providers/providers.yaml');
const MUST_AGREE = ['auth_mode', 'authorization_url', 'token_url', 'proxy.base_url'];

/** The resolved catalog the binary sees, by provider name. */
async function resolvedCatalog(args) {
    const { stdout } = await run(BIN, ['providers', 'list', '--json', ...args], { maxBuffer: 256 * 1024 * 1024 });
    return new Map(JSON.parse(stdout).map((entry) => [entry.name, entry]));
}

function field(entry, dotted) {
    return dotted.split('.').reduce((value, key) => (value == null ? undefined : value[key]), entry);
}

describe('the catalog', () => {
    it('holds at least 300 providers of its own', async () => {
        const ours = await resolvedCatalog(['--config', path.join(REPO, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers')]);
        assert.ok(ours.size >= 300, `only ${ours.size} providers`);
    });

    it('agrees with @nangohq/providers on auth mode, URLs and base URL, or says why not', async () => {
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'latchkey-catalog-'));
        await fs.mkdir(path.join(dir, 'empty'));
        await fs.writeFile(path.join(dir, 'nango.yaml'), `catalogs:\n  - ${NANGO_CATALOG}\n`);
        const nango = await resolvedCatalog(['--config', path.join(dir, 'nango.yaml'), '--catalog-dir', path.join(dir, 'empty')]);
        const ours = await resolvedCatalog(['--config', path.join(REPO, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers')]);

        const differences = [];
        const unexplained = [];
        let shared = 0;
        for (const [name, entry] of ours) {
            const theirs = nango.get(name);
            if (!theirs) continue;
            shared += 1;
            const reasons = entry.differences_from_nango || {};
            for (const f of MUST_AGREE) {
                const a = JSON.stringify(field(entry, f));
                const b = JSON.stringify(field(theirs, f));
                if (a === b) continue;
                const reason = reasons[f];
                differences.push(`${name}.${f}: ours ${a}, Nango's ${b}${reason ? ` (${reason})` : ''}`);
                if (!reason) unexplained.push(`${name}.${f}`);
            }
            for (const f of Object.keys(reasons)) {
                assert.notEqual(
                    JSON.stringify(field(entry, f)),
                    JSON.stringify(field(theirs, f)),
                    `${name} explains a difference in ${f} that does not exist; remove the note`
                );
            }
        }
        console.log(`${shared} providers also in @nangohq/providers; ${differences.length} difference(s):`);
        for (const d of differences) console.log(`  ${d}`);
        assert.deepEqual(unexplained, [], 'every difference needs a note under differences_from_nango');
        await fs.rm(dir, { recursive: true, force: true });
    });

    it('prints the catalog for a person', async () => {
        const args = ['--config', path.join(REPO, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers')];
        const list = await run(BIN, ['providers', 'list', '--auth-mode', 'OAUTH2', ...args]);
        assert.match(list.stdout, /^NAME\s+AUTH MODE\s+CATEGORIES\s+DISPLAY NAME/);
        assert.ok(list.stdout.trimEnd().split('\n').slice(1, -1).every((line) => line.includes('OAUTH2')));
        const byCategory = await run(BIN, ['providers', 'list', '--category', 'dev-tools', ...args]);
        assert.match(byCategory.stdout, /\ngithub\s/);
        const show = await run(BIN, ['providers', 'show', 'github', ...args]);
        assert.match(show.stdout, /auth mode\s+OAUTH2/);
        assert.match(show.stdout, /proxy base url\s+https:\/\/api\.github\.com/);
        await assert.rejects(run(BIN, ['providers', 'show', 'no-such-provider', ...args]), /there is no provider/);
    });
});
