// A real headless Chromium (the system's, driven by playwright-core) and an application page on
// loopback that loads the unmodified @nangohq/frontend package, as a customer's site would.
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const SDK_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../node_modules/@nangohq/frontend/dist');

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export async function launchBrowser() {
    return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

/** Serves the application page at `/` and the SDK's ES modules at `/sdk/`. */
export async function startAppPage() {
    const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Customer app</title><link rel="icon" href="data:,"></head>
<body>
<button id="connect">Connect</button>
<script type="module">
import Nango from '/sdk/index.js';
window.Nango = Nango;
window.events = [];
window.sdkReady = true;
</script>
</body></html>`;
    const server = http.createServer(async (req, res) => {
        const url = new URL(req.url, 'http://x');
        if (url.pathname === '/') {
            res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
            res.end(page);
            return;
        }
        const name = url.pathname.startsWith('/sdk/') ? path.basename(url.pathname) : null;
        if (name && /^[a-zA-Z]+\.js$/.test(name)) {
            try {
                const text = await fs.readFile(path.join(SDK_DIR, name));
                res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
                res.end(text);
                return;
            } catch {
                // fall through
            }
        }
        res.writeHead(404);
        res.end();
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
        url: `http://127.0.0.1:${server.address().port}`,
        close: () =>
            new Promise((resolve) => {
                server.closeAllConnections();
                server.close(resolve);
            })
    };
}

/** Records console errors and uncaught exceptions of a page and its frames. */
export function watchConsole(page) {
    const errors = [];
    page.on('console', (message) => {
        if (message.type() === 'error') errors.push(`${message.text()} @ ${message.location()?.url ?? ''}`);
    });
    page.on('pageerror', (error) => errors.push(`uncaught: ${error.message}`));
    return errors;
}

/** Signs in on oidc-provider's development login and consent pages in `popup`. */
export async function consentInPopup(popup, { login, password }) {
    await popup.waitForSelector('input[name="login"]', { timeout: 60_000 });
    await popup.fill('input[name="login"]', login);
    await popup.fill('input[name="password"]', password);
    await popup.click('button:has-text("Sign-in")');
    await popup.waitForSelector('button:has-text("Continue")', { timeout: 60_000 });
    await popup.click('button:has-text("Continue")');
}

/** Whether `bytes` is a PNG of at least `width`×`height` pixels. */
export function pngSize(bytes) {
    const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    if (!bytes.subarray(0, 8).equals(signature)) return null;
    return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}
