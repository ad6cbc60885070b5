// A webhook receiver on loopback: it records every POST (raw body, headers, time) and answers
// as scripted per connection id, so that tests can make it fail, rate limit or stall.
import http from 'node:http';

/**
 * `plan(connectionId, [...answers])` scripts the next answers for webhooks about that
 * connection; an answer is a status code or `{ status, headers, delayMs }`. Unscripted
 * webhooks get 200.
 */
export async function startReceiver() {
    const received = [];
    const plans = new Map();
    const server = http.createServer(async (req, res) => {
        const chunks = [];
        for await (const chunk of req) chunks.push(chunk);
        const raw = Buffer.concat(chunks).toString('utf8');
        let body = null;
        try {
            body = JSON.parse(raw);
        } catch {
            // recorded as raw text only
        }
        const entry = { at: Date.now(), path: req.url, headers: req.headers, raw, body, answered: false };
        received.push(entry);
        const queue = plans.get(body?.connectionId) || [];
        const next = queue.length > 0 ? queue.shift() : 200;
        const answer = typeof next === 'number' ? { status: next } : next;
        if (answer.delayMs) await new Promise((r) => setTimeout(r, answer.delayMs));
        res.writeHead(answer.status, { 'content-type': 'application/json', ...(answer.headers || {}) });
        res.end('{}');
        entry.answered = true;
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address();
    return {
        url: `http://127.0.0.1:${port}`,
        received,
        plan: (connectionId, answers) => plans.set(connectionId, [...answers]),
        about: (connectionId) => received.filter((r) => r.body?.connectionId === connectionId),
        close: () =>
            new Promise((resolve) => {
                server.closeAllConnections();
                server.close(resolve);
            })
    };
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function eventually(check, { timeoutMs = 60_000, intervalMs = 200, what = 'the condition' } = {}) {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
        try {
            last = await check();
            if (last) return last;
        } catch (e) {
            last = e;
        }
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
        await new Promise((r) => setTimeout(r, intervalMs));
    }
}
