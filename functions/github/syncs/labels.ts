// The labels of the repository in the connection's metadata, fetched in full on every run.
// Labels removed on GitHub are marked deleted in the records cache: the run tracks which
// labels it saw and everything else of the model is deleted when it ends.
import type { NangoSync } from 'nango';

interface Label {
    id: number;
    name: string;
    color: string;
    description: string | null;
}

export default async function run(nango: NangoSync): Promise<void> {
    const { owner, repo } = await nango.getMetadata<{ owner: string; repo: string }>();
    await nango.trackDeletesStart('GithubLabel');
    for await (const page of nango.paginate<Label>({ endpoint: `/repos/${owner}/${repo}/labels` })) {
        await nango.batchSave(
            page.map((label) => ({ id: String(label.id), name: label.name, color: label.color, description: label.description })),
            'GithubLabel',
        );
    }
    const { deletedKeys } = await nango.trackDeletesEnd('GithubLabel');
    await nango.log('labels synced', { deleted: deletedKeys });
}
