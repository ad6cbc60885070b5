// Databases for test gateways: a SQLite file in the gateway's own directory, or a fresh
// PostgreSQL database on the server named by DATABASE_URL (default: the local one).
import crypto from 'node:crypto';
import pg from 'pg';

export const ADMIN_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

/** The databases every API test runs against (LATCHKEY_TEST_DATABASES=sqlite narrows it). */
export function databases() {
    return (process.env.LATCHKEY_TEST_DATABASES || 'sqlite,postgres').split(',').map((d) => d.trim()).filter(Boolean);
}

async function admin(sql) {
    const client = new pg.Client({ connectionString: ADMIN_URL });
    await client.connect();
    try {
        return await client.query(sql);
    } finally {
        await client.end();
    }
}

/** Creates an empty PostgreSQL database and returns its URL and a function that drops it. */
export async function createPostgresDatabase() {
    const name = `latchkey_test_${crypto.randomBytes(6).toString('hex')}`;
    await admin(`CREATE DATABASE ${name}`);
    const url = new URL(ADMIN_URL);
    url.pathname = `/${name}`;
    return {
        url: url.toString(),
        name,
        drop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    };
}

/** Runs one query against a test database. */
export async function query(databaseUrl, sql, params = []) {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
        return await client.query(sql, params);
    } finally {
        await client.end();
    }
}
