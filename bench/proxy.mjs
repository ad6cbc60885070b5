#!/usr/bin/env node
// The proxy benchmark: one run, one local upstream (nginx returning a small JSON body), four
// ways to reach it: directly, through Debian's nginx as a plain reverse proxy, and through
// Latchkey's /proxy with credential injection on SQLite and on PostgreSQL. Load comes from wrk,
// a separate process. A fifth row, Pingora alone with one fixed header added
// (gateway/examples/bare_proxy.rs), is the floor under Latchkey: what the gateway costs beyond it
// is its own work.
//
//   cargo build --release -p latchkey --bin latchkey --example bare_proxy && node bench/proxy.mjs
//
// Environment: LATCHKEY_BIN (default target/release/latchkey), DATABASE_URL (the PostgreSQL
// server; a scratch database is created and dropped), DURATION (seconds per peak run, default
// 60), RATE_DURATION (seconds per fixed-rate run, default 30), CONNECTIONS (wrk connections for
// peak runs, default 64), THREADS (Latchkey's worker threads, default: the CPU count).
//
// Peak: wrk with fixed connections, as fast as it goes. Added latency: wrk again, each connection
// pausing between requests (wrk's delay() hook) so that the total rate is half of nginx's peak;
// Latchkey's p50/p99 minus the direct p50/p99 at that rate. wrk measures each request from when
// it was sent, so queueing before the send is not counted (no coordinated-omission correction).
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.resolve(process.env.LATCHKEY_BIN || path.join(REPO, 'target/release/latchkey'));
const BARE = path.join(path.dirname(BIN), 'examples/bare_proxy');
const PG = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const DURATION = Number(process.env.DURATION || 60);
const RATE_DURATION = Number(process.env.RATE_DURATION || 30);
const CONNECTIONS = Number(process.env.CONNECTIONS || 64);
const THREADS = Number(process.env.THREADS || os.cpus().length);
const BODY = JSON.stringify({ id: 42, name: 'benchmark', items: [1, 2, 3], ok: true });

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latchkey-bench-'));
const children = [];
process.on('exit', () => {
    for (const child of children) if (child.exitCode === null) stop(child);
    fs.rmSync(dir, { recursive: true, force: true });
});
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

// nginx's master stops its workers on SIGTERM (killed, it leaves them running); the gateways
// and bare Pingora get SIGKILL, since SIGTERM starts their graceful shutdown, which waits.
function stop(child) {
    child.kill(child.spawnfile === 'nginx' ? 'SIGTERM' : 'SIGKILL');
}

async function freePort() {
    return new Promise((resolve) => {
        const server = net.createServer();
        server.listen(0, '127.0.0.1', () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}

async function waitFor(url, headers = {}) {
    const deadline = Date.now() + 30_000;
    for (;;) {
        try {
            const r = await fetch(url, { headers });
            if (r.status < 500) return;
        } catch {
            // not up yet
        }
        if (Date.now() > deadline) throw new Error(`${url} did not come up`);
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
}

function nginx(name, body) {
    const prefix = path.join(dir, name);
    fs.mkdirSync(prefix, { recursive: true });
    const conf = path.join(prefix, 'nginx.conf');
    fs.writeFileSync(
        conf,
        `daemon off; pid ${prefix}/nginx.pid; error_log ${prefix}/error.log warn;
${body.main}
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy;
    ${body.http}
}
`
    );
    const child = spawn('nginx', ['-c', conf, '-p', prefix, '-e', `${prefix}/error.log`], { stdio: 'ignore' });
    children.push(child);
    return child;
}

async function startLatchkey(databaseUrl, upstreamUrl) {
    const port = await freePort();
    const home = path.join(dir, `latchkey-${port}`);
    fs.mkdirSync(home);
    fs.writeFileSync(
        path.join(home, 'bench-catalog.yaml'),
        `bench-api:
    display_name: Bench API
    categories: [other]
    auth_mode: API_KEY
    proxy:
        base_url: ${upstreamUrl}
        headers:
            x-api-key: \${apiKey}
    docs: https://example.com/bench
`
    );
    fs.writeFileSync(path.join(home, 'nango.yaml'), 'catalogs: [bench-catalog.yaml]\nintegrations:\n  bench:\n    provider: bench-api\n');
    const secretKey = crypto.randomUUID();
    const child = spawn(
        BIN,
        ['serve', '--config', path.join(home, 'nango.yaml'), '--catalog-dir', path.join(REPO, 'providers'), '--listen', `127.0.0.1:${port}`, '--threads', String(THREADS)],
        {
            cwd: home,
            env: {
                PATH: process.env.PATH,
                HOME: process.env.HOME,
                DATABASE_URL: databaseUrl,
                LATCHKEY_DATA_DIR: path.join(home, '.latchkey'),
                LATCHKEY_SECRET_KEY: secretKey,
                LATCHKEY_ENCRYPTION_KEY: crypto.randomBytes(32).toString('base64'),
                LATCHKEY_LOG: 'warn'
            },
            stdio: ['ignore', 'ignore', fs.openSync(path.join(home, 'stderr.log'), 'w')]
        }
    );
    children.push(child);
    const url = `http://127.0.0.1:${port}`;
    await waitFor(`${url}/health`);
    const r = await fetch(`${url}/connections`, {
        method: 'POST',
        headers: { authorization: `Bearer ${secretKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ provider_config_key: 'bench', connection_id: 'user-1', credentials: { type: 'API_KEY', apiKey: 'bench-key-123' } })
    });
    if (!r.ok) throw new Error(`cannot create the connection: ${await r.text()}`);
    const headers = { authorization: `Bearer ${secretKey}`, 'provider-config-key': 'bench', 'connection-id': 'user-1' };
    const check = await fetch(`${url}/proxy/items`, { headers });
    if ((await check.text()) !== BODY) throw new Error('the proxy does not return the upstream body');
    return { child, url: `${url}/proxy/items`, headers };
}

function peakMemory(child) {
    const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
    return Number(status.match(/^VmHWM:\s+(\d+) kB/m)[1]) / 1024;
}

/** Runs wrk and reads its summary. `delayMs` makes each connection pause between requests. */
function wrk(url, { headers = {}, connections, seconds, delayMs = 0 }) {
    const script = path.join(dir, `wrk-${delayMs}.lua`);
    fs.writeFileSync(
        script,
        `${delayMs > 0 ? `function delay() return ${delayMs} end\n` : ''}
done = function(summary, latency, requests)
    io.write(string.format("RESULT %d %d %d %d %d %d %f %f\\n", summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
`
    );
    const args = ['-t', '1', '-c', String(connections), '-d', `${seconds}s`, '--timeout', '5s', '-s', script];
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    args.push(url);
    const out = execFileSync('wrk', args, { encoding: 'utf8' });
    const [requests, socketErrors, statusErrors, durationUs, p50, p99] = out.match(/^RESULT (.*)$/m)[1].split(' ').map(Number);
    return { rps: requests / (durationUs / 1e6), requests, errors: socketErrors + statusErrors, p50, p99 };
}

const fmtUs = (us) => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`);

async function main() {
    for (const bin of [BIN, BARE]) {
        if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run cargo build --release -p latchkey --bin latchkey --example bare_proxy`);
    }
    const upstreamPort = await freePort();
    const nginxPort = await freePort();
    nginx('upstream', {
        main: 'worker_processes 1;',
        http: `server { listen 127.0.0.1:${upstreamPort}; location / { default_type application/json; return 200 '${BODY}'; } }`
    });
    nginx('proxy', {
        main: `worker_processes ${THREADS};`,
        http: `upstream api { server 127.0.0.1:${upstreamPort}; keepalive 256; }
    server { listen 127.0.0.1:${nginxPort};
        location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header x-api-key bench-key-123; } }`
    });
    const barePort = await freePort();
    children.push(spawn(BARE, [`127.0.0.1:${barePort}`, `127.0.0.1:${upstreamPort}`, String(THREADS)], { stdio: 'ignore' }));
    const direct = `http://127.0.0.1:${upstreamPort}/items`;
    const viaNginx = `http://127.0.0.1:${nginxPort}/items`;
    const viaPingora = `http://127.0.0.1:${barePort}/items`;
    await waitFor(direct);
    await waitFor(viaNginx);
    await waitFor(viaPingora);

    const pgName = `latchkey_bench_${crypto.randomBytes(4).toString('hex')}`;
    execFileSync('psql', [PG, '-qc', `CREATE DATABASE ${pgName}`]);
    const pgUrl = new URL(PG);
    pgUrl.pathname = `/${pgName}`;
    const targets = [
        { name: 'direct', url: direct, headers: {} },
        { name: 'nginx', url: viaNginx, headers: {} },
        { name: 'pingora (bare)', url: viaPingora, headers: {} }
    ];
    const sqlite = await startLatchkey(`sqlite://${path.join(dir, 'bench.db')}`, `http://127.0.0.1:${upstreamPort}`);
    targets.push({ name: 'latchkey-sqlite', ...sqlite });
    const postgres = await startLatchkey(pgUrl.toString(), `http://127.0.0.1:${upstreamPort}`);
    targets.push({ name: 'latchkey-postgres', ...postgres });

    try {
        console.log(`machine: ${os.cpus().length} × ${os.cpus()[0].model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
        console.log(`peak: wrk -t1 -c${CONNECTIONS} for ${DURATION} s each; Latchkey with ${THREADS} worker threads\n`);
        for (const t of targets) {
            wrk(t.url, { headers: t.headers, connections: 8, seconds: 2 }); // warm-up
            t.peak = wrk(t.url, { headers: t.headers, connections: CONNECTIONS, seconds: DURATION });
            console.log(`${t.name.padEnd(18)} ${t.peak.rps.toFixed(0).padStart(7)} req/s  p50 ${fmtUs(t.peak.p50)}  p99 ${fmtUs(t.peak.p99)}  errors ${t.peak.errors}`);
        }
        const nginxPeak = targets[1].peak.rps;
        const pingoraPeak = targets[2].peak.rps;
        const rate = nginxPeak / 2;
        // Each connection sends one request, then waits `delay` ms: connections ≈ rate × delay.
        const delayMs = Math.max(1, Math.round(32_000 / rate));
        const connections = Math.max(1, Math.round((rate * delayMs) / 1000));
        console.log(`\nat half of nginx's peak (~${rate.toFixed(0)} req/s: ${connections} connections, ${delayMs} ms pause each) for ${RATE_DURATION} s`);
        for (const t of targets) {
            t.rated = wrk(t.url, { headers: t.headers, connections, seconds: RATE_DURATION, delayMs });
            console.log(`${t.name.padEnd(18)} ${t.rated.rps.toFixed(0).padStart(7)} req/s  p50 ${fmtUs(t.rated.p50)}  p99 ${fmtUs(t.rated.p99)}  errors ${t.rated.errors}`);
        }
        const base = targets[0].rated;
        console.log('\nsummary');
        for (const t of targets.slice(1)) {
            const memory = t.child ? `  peak memory ${peakMemory(t.child).toFixed(0)} MiB` : '';
            console.log(
                `${t.name.padEnd(18)} throughput ${(t.peak.rps / nginxPeak).toFixed(2)} × nginx, ${(t.peak.rps / pingoraPeak).toFixed(2)} × bare Pingora  added p50 ${fmtUs(t.rated.p50 - base.p50)}  added p99 ${fmtUs(t.rated.p99 - base.p99)}  errors ${t.peak.errors + t.rated.errors}${memory}`
            );
        }
    } finally {
        for (const child of children) stop(child);
        await new Promise((resolve) => setTimeout(resolve, 500));
        execFileSync('psql', [PG, '-qc', `DROP DATABASE IF EXISTS ${pgName} WITH (FORCE)`]);
    }
}

main().catch((e) => {
    console.error(e.message);
    process.exit(1);
});
