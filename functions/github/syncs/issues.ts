// GitHub issues of the repository named in the connection's metadata (`{ owner, repo }`),
// incrementally: after the first run only issues updated since the last successful run are
// fetched. Pages follow GitHub's `Link: <…>; rel="next"` header (the provider's pagination).
import { createSync } from 'nango';
import * as z from 'zod';

interface GithubIssueResponse {
    id: number;
    number: number;
    title: string;
    state: string;
    html_url: string;
    body: string | null;
    user: { login: string } | null;
    labels: { name: string }[];
    pull_request?: unknown;
    created_at: string;
    updated_at: string;
}

const GithubIssue = z.object({ id: z.string(), number: z.number(), title: z.string() });

export default createSync({
    description: 'Issues of one repository, incrementally',
    frequency: 'every hour',
    models: { GithubIssue },
    exec: async (nango) => {
        const { owner, repo } = (await nango.getMetadata()) as { owner?: string; repo?: string };
        if (!owner || !repo) {
            throw new Error('set the connection metadata to { "owner": "…", "repo": "…" } first');
        }
        const params: Record<string, string | number> = { state: 'all', sort: 'updated', direction: 'asc' };
        if (nango.lastSyncDate) {
            params['since'] = nango.lastSyncDate.toISOString();
        }
        let saved = 0;
        for await (const page of nango.paginate<GithubIssueResponse>({
            endpoint: `/repos/${owner}/${repo}/issues`,
            params,
            paginate: { limit: 50 },
            retries: 3,
        })) {
            const issues = page
                .filter((issue) => !issue.pull_request)
                .map((issue) => ({
                    id: String(issue.id),
                    number: issue.number,
                    title: issue.title,
                    state: issue.state,
                    url: issue.html_url,
                    author: issue.user?.login ?? null,
                    labels: issue.labels.map((label) => label.name),
                    created_at: issue.created_at,
                    updated_at: issue.updated_at,
                }));
            await nango.batchSave(issues, 'GithubIssue');
            saved += issues.length;
        }
        await nango.log(`saved ${saved} issues of ${owner}/${repo}`, { level: 'info' });
    },
});
