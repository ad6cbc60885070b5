// Creates an issue and returns its number and URL. A missing title is the caller's mistake:
// it comes back as an ActionError with a payload saying so.
import { createAction, ActionError } from 'nango';

interface CreateIssueInput {
    owner: string;
    repo: string;
    title: string;
    body?: string;
    labels?: string[];
}

interface CreatedIssue {
    id: string;
    number: number;
    url: string;
}

export default createAction({
    description: 'Create an issue',
    exec: async (nango, input: CreateIssueInput): Promise<CreatedIssue> => {
        if (!input?.title) {
            throw new ActionError({ message: 'a title is required', field: 'title' });
        }
        const response = await nango.post<{ id: number; number: number; html_url: string }>({
            endpoint: `/repos/${input.owner}/${input.repo}/issues`,
            data: { title: input.title, body: input.body ?? '', labels: input.labels ?? [] },
            retries: 2,
        });
        return { id: String(response.data.id), number: response.data.number, url: response.data.html_url };
    },
});
