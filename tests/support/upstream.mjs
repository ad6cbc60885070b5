// Upstream APIs on loopback: real HTTP servers that record what reached them.
import http from 'node:http';

/**
 * Starts an HTTP server. Without a handler it answers every request with a JSON echo of what
 * it received: method, path (with query), headers and body.
 */
export async function startUpstream(handler) {
    const requests = [];
    const server = http.createServer(async (req, res) => {
        const chunks = [];
        for await (const chunk of req) chunks.push(chunk);
        const body = Buffer.concat(chunks);
        const seen = { method: req.method, url: req.url, headers: req.headers, body: body.toString('utf8') };
        requests.push(seen);
        if (handler) {
            await handler(req, res, body);
            return;
        }
        res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'echo' });
        res.end(JSON.stringify(seen));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address();
    return {
        port,
        url: `http://127.0.0.1:${port}`,
        requests,
        close: () =>
            new Promise((resolve) => {
                server.closeAllConnections();
                server.close(resolve);
            })
    };
}
