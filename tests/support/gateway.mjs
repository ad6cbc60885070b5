// Starts the real latchkey binary for a test, on a free loopback port, with its own directory
// and database, and stops it afterwards.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { createPostgresDatabase } from './db.mjs';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.LATCHKEY_BIN || path.join(REPO, 'target/debug/latchkey');

export async function freePort() {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.unref();
        server.on('error', reject);
        server.listen(0, '127.0.0.1', () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}

/**
 * Starts a gateway.
 * - `db`: 'sqlite' or 'postgres' (a fresh database), or `{ url }` to share one.
 * - `config`: the text of nango.yaml; `files`: other files to write beside it.
 * - `env`: extra environment; `args`: extra `serve` arguments.
 */
export async function startGateway({ db = 'sqlite', config = '', files = {}, env = {}, args = [], secretKey, encryptionKey } = {}) {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'latchkey-test-'));
    await fs.writeFile(path.join(dir, 'nango.yaml'), config);
    for (const [name, content] of Object.entries(files)) {
        await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
        await fs.writeFile(path.join(dir, name), content);
    }
    let database = null;
    let databaseUrl;
    if (db === 'postgres') {
        database = await createPostgresDatabase();
        databaseUrl = database.url;
    } else if (typeof db === 'object') {
        databaseUrl = db.url;
    } else {
        databaseUrl = `sqlite://${path.join(dir, '.latchkey/latchkey.db')}`;
    }
    const gateway = {
        dir,
        databaseUrl,
        secretKey: secretKey || crypto.randomUUID(),
        encryptionKey: encryptionKey || crypto.randomBytes(32).toString('base64'),
        output: '',
        env,
        args,
        database
    };
    await launch(gateway);
    gateway.stop = () => stop(gateway);
    gateway.restart = async () => {
        await halt(gateway);
        await launch(gateway);
    };
    gateway.fetch = (pathname, init = {}) =>
        fetch(`${gateway.url}${pathname}`, {
            ...init,
            headers: { authorization: `Bearer ${gateway.secretKey}`, ...(init.headers || {}) }
        });
    return gateway;
}

async function launch(gateway) {
    const port = await freePort();
    gateway.port = port;
    gateway.url = `http://127.0.0.1:${port}`;
    const child = spawn(
        BIN,
        [
            'serve',
            '--config', path.join(gateway.dir, 'nango.yaml'),
            '--catalog-dir', path.join(REPO, 'providers'),
            '--listen', `127.0.0.1:${port}`,
            '--server-url', gateway.url,
            '--threads', '2',
            '--shutdown-grace', '1',
            ...gateway.args
        ],
        {
            cwd: gateway.dir,
            env: {
                PATH: process.env.PATH,
                HOME: process.env.HOME,
                DATABASE_URL: gateway.databaseUrl,
                LATCHKEY_DATA_DIR: path.join(gateway.dir, '.latchkey'),
                LATCHKEY_SECRET_KEY: gateway.secretKey,
                LATCHKEY_ENCRYPTION_KEY: gateway.encryptionKey,
                LATCHKEY_LOG: process.env.LATCHKEY_LOG || 'info',
                ...gateway.env
            },
            stdio: ['ignore', 'pipe', 'pipe']
        }
    );
    gateway.child = child;
    child.stdout.on('data', (d) => (gateway.output += d));
    child.stderr.on('data', (d) => (gateway.output += d));
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    gateway.exited = exited;
    const deadline = Date.now() + 30_000;
    for (;;) {
        const done = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 100))]);
        if (done) {
            throw new Error(`latchkey exited during start (${JSON.stringify(done)}):\n${gateway.output}`);
        }
        try {
            const res = await fetch(`${gateway.url}/health`);
            if (res.ok) return;
        } catch {
            // not listening yet
        }
        if (Date.now() > deadline) {
            child.kill('SIGKILL');
            throw new Error(`latchkey did not become healthy in 30 s:\n${gateway.output}`);
        }
    }
}

async function halt(gateway) {
    if (!gateway.child || gateway.child.exitCode !== null || gateway.child.signalCode !== null) return;
    gateway.child.kill('SIGINT');
    const timer = setTimeout(() => gateway.child.kill('SIGKILL'), 5000);
    await gateway.exited;
    clearTimeout(timer);
}

async function stop(gateway) {
    await halt(gateway);
    if (gateway.database) await gateway.database.drop();
    await fs.rm(gateway.dir, { recursive: true, force: true });
}

/**
 * A request whose path goes on the wire exactly as written (fetch would normalise `%2e%2e`
 * and `..` before sending). Resolves to `{ status, body }`.
 */
export function rawRequest(gateway, rawPath, { method = 'GET', headers = {} } = {}) {
    return new Promise((resolve, reject) => {
        const req = http.request(
            { host: '127.0.0.1', port: gateway.port, method, path: rawPath, headers: { authorization: `Bearer ${gateway.secretKey}`, ...headers } },
            (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
            }
        );
        req.on('error', reject);
        req.end();
    });
}
