// A GitHub-like API on loopback: issues (paginated with Link headers, filtered by `since`),
// issue creation and labels, all behind a bearer token. Tests change its data between runs;
// `delayMs` slows down reading issues and labels.
import { startUpstream } from './upstream.mjs';

export const GITHUB_TOKEN = 'gho_loopback_token';

/** The labels most sync tests start from. */
export const TWO_LABELS = [
    { id: 1, name: 'bug', color: 'red', description: null },
    { id: 2, name: 'docs', color: 'blue', description: null }
];

/** Imports a connection to the loopback GitHub with its token, through POST /connections. */
export async function importGithubConnection(gateway, providerConfigKey, connectionId) {
    const r = await gateway.fetch('/connections', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ provider_config_key: providerConfigKey, connection_id: connectionId, credentials: { type: 'OAUTH2', access_token: GITHUB_TOKEN } })
    });
    if (r.status !== 201) throw new Error(`cannot import connection ${connectionId}: ${r.status} ${await r.text()}`);
}

/** The catalog entry of a provider shaped like GitHub's, pointed at `url`. */
export function githubCatalog(url) {
    return `
github-loopback:
    display_name: GitHub (loopback)
    categories: [dev-tools]
    auth_mode: OAUTH2
    authorization_url: ${url}/login/oauth/authorize
    token_url: ${url}/login/oauth/access_token
    proxy:
        base_url: ${url}
        headers:
            accept: application/vnd.github+json
        paginate:
            type: link
            link_rel_in_response_header: next
            limit_name_in_request: per_page
    docs: https://example.com/github
`;
}

export async function startGithub() {
    const state = { issues: [], labels: [], nextId: 1000, failNext: 0, calls: 0, delayMs: 0 };
    const upstream = await startUpstream(async (req, res, body) => {
        const url = new URL(req.url, 'http://x');
        const send = (status, data, headers = {}) => {
            res.writeHead(status, { 'content-type': 'application/json', ...headers });
            res.end(JSON.stringify(data));
        };
        state.calls++;
        if (req.headers.authorization !== `Bearer ${GITHUB_TOKEN}`) return send(401, { message: 'Bad credentials' });
        if (state.failNext > 0) {
            state.failNext--;
            return send(502, { message: 'bad gateway' });
        }
        let m;
        if ((m = url.pathname.match(/^\/repos\/([^/]+)\/([^/]+)\/issues$/))) {
            if (req.method === 'POST') {
                const input = JSON.parse(body.toString() || '{}');
                const now = new Date().toISOString();
                const issue = {
                    id: state.nextId++,
                    number: state.issues.length + 1,
                    title: input.title,
                    state: 'open',
                    html_url: `https://github.example/${m[1]}/${m[2]}/issues/${state.issues.length + 1}`,
                    body: input.body,
                    user: { login: 'octocat' },
                    labels: (input.labels || []).map((name) => ({ name })),
                    created_at: now,
                    updated_at: now
                };
                state.issues.push(issue);
                return send(201, issue);
            }
            if (state.delayMs) await new Promise((r) => setTimeout(r, state.delayMs));
            const since = url.searchParams.get('since');
            const perPage = Number(url.searchParams.get('per_page') || 30);
            const page = Number(url.searchParams.get('page') || 1);
            const matching = state.issues
                .filter((i) => !since || i.updated_at >= since)
                .sort((a, b) => a.updated_at.localeCompare(b.updated_at) || a.id - b.id);
            const slice = matching.slice((page - 1) * perPage, page * perPage);
            const headers = {};
            if (page * perPage < matching.length) {
                const next = new URL(`${upstream.url}${url.pathname}`);
                for (const [k, v] of url.searchParams) if (k !== 'page') next.searchParams.set(k, v);
                next.searchParams.set('page', String(page + 1));
                headers.link = `<${next}>; rel="next", <${upstream.url}${url.pathname}?page=1>; rel="first"`;
            }
            return send(200, slice, headers);
        }
        if (url.pathname === '/user') return send(200, { login: 'octocat', id: 1 });
        if ((m = url.pathname.match(/^\/repos\/([^/]+)\/([^/]+)\/labels$/))) {
            if (state.delayMs) await new Promise((r) => setTimeout(r, state.delayMs));
            return send(200, state.labels);
        }
        return send(404, { message: 'Not Found' });
    });
    /** Adds `n` issues updated now (or at `at`). */
    const addIssues = (n, at = new Date().toISOString()) => {
        for (let i = 0; i < n; i++) {
            const id = state.nextId++;
            state.issues.push({
                id,
                number: state.issues.length + 1,
                title: `Issue ${id}`,
                state: 'open',
                html_url: `https://github.example/o/r/issues/${id}`,
                body: '',
                user: { login: 'octocat' },
                labels: [],
                created_at: at,
                updated_at: at
            });
        }
    };
    return { ...upstream, state, addIssues };
}
