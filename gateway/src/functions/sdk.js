// The `nango` module functions import, and the object they receive: Nango's function SDK
// written on one primitive, `__host(op, json) -> json`, which the gateway answers (see
// gateway/src/functions/host.rs for the operations).

function call(op, arg) {
    const answer = JSON.parse(__host(op, JSON.stringify(arg === undefined ? null : arg)));
    if (answer.error) {
        throw hostError(answer.error);
    }
    return answer.ok;
}

function hostError(e) {
    const error = new Error(e.message);
    error.type = e.type;
    if (e.response) {
        // The shape of an Axios error, which Nango functions inspect.
        error.response = e.response;
        error.status = e.response.status;
    }
    return error;
}

export class ActionError extends Error {
    constructor(payload) {
        super(payload && typeof payload.message === 'string' ? payload.message : 'The action failed');
        this.name = 'ActionError';
        this.type = 'action_script_runtime_error';
        this.payload = payload;
    }
}

export function createSync(definition) {
    return { type: 'sync', ...definition };
}

export function createAction(definition) {
    return { type: 'action', ...definition };
}

export function createOnEvent(definition) {
    return { type: 'onEvent', ...definition };
}

const LEVELS = { debug: 0, verbose: 0, silly: 0, http: 1, info: 1, warn: 2, error: 3 };

function getPath(value, path) {
    if (!path) return value;
    return String(path)
        .split('.')
        .reduce((v, key) => (v === undefined || v === null ? undefined : v[key]), value);
}

function setPath(target, path, value) {
    const keys = String(path).split('.');
    let node = target;
    for (const key of keys.slice(0, -1)) {
        if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
        node = node[key];
    }
    node[keys[keys.length - 1]] = value;
}

// The `rel="next"` URL of an RFC 8288 Link header.
function linkRel(header, rel) {
    if (!header) return undefined;
    for (const part of String(header).split(',')) {
        const match = part.match(/<([^>]*)>\s*;(.*)/);
        if (match && new RegExp(`rel\\s*=\\s*"?${rel}"?`).test(match[2])) return match[1];
    }
    return undefined;
}

class Nango {
    constructor(context) {
        this.connectionId = context.connectionId;
        this.providerConfigKey = context.providerConfigKey;
        this.provider = context.provider;
        this.syncName = context.syncName;
        this.variant = context.variant || 'base';
        this.scriptType = context.scriptType;
        this.lastSyncDate = context.lastSyncDate ? new Date(context.lastSyncDate) : undefined;
        this.ActionError = ActionError;
        this.paginateDefaults = context.paginate || null;
        this.logLevel = LEVELS.debug;
    }

    async proxy(config) {
        return call('proxy', {
            method: (config.method || 'GET').toUpperCase(),
            endpoint: config.endpoint,
            params: config.params,
            data: config.data,
            headers: config.headers,
            retries: config.retries,
            retryOn: config.retryOn,
            baseUrlOverride: config.baseUrlOverride,
            providerConfigKey: config.providerConfigKey,
            connectionId: config.connectionId,
        });
    }

    async get(config) {
        return this.proxy({ ...config, method: 'GET' });
    }

    async post(config) {
        return this.proxy({ ...config, method: 'POST' });
    }

    async put(config) {
        return this.proxy({ ...config, method: 'PUT' });
    }

    async patch(config) {
        return this.proxy({ ...config, method: 'PATCH' });
    }

    async delete(config) {
        return this.proxy({ ...config, method: 'DELETE' });
    }

    async *paginate(config) {
        const options = { ...(this.paginateDefaults || {}), ...(config.paginate || {}) };
        const method = (config.method || 'GET').toUpperCase();
        const inBody = options.in_body !== undefined ? options.in_body : ['POST', 'PUT', 'PATCH'].includes(method);
        let params = { ...(config.params || {}) };
        const data = config.data && typeof config.data === 'object' ? { ...config.data } : config.data;
        const put = (name, value) => (inBody ? setPath(data, name, value) : (params[name] = value));
        let request = { ...config, method, params, data };
        if (options.limit && options.limit_name_in_request) put(options.limit_name_in_request, options.limit);
        const items = (body) => {
            const page = getPath(body, options.response_path);
            return Array.isArray(page) ? page : [];
        };
        const fetchPage = async () => {
            const response = await this.proxy({ ...request, params, data });
            if (options.on_page) await options.on_page({ nextPageParam: undefined, response });
            return response;
        };
        switch (options.type) {
            case 'cursor': {
                for (;;) {
                    const response = await fetchPage();
                    const page = items(response.data);
                    if (page.length === 0) return;
                    yield page;
                    const next = getPath(response.data, options.cursor_path_in_response);
                    if (next === undefined || next === null || String(next).trim() === '') return;
                    put(options.cursor_name_in_request, next);
                }
            }
            case 'link': {
                const seen = new Set();
                for (;;) {
                    const response = await fetchPage();
                    const page = items(response.data);
                    if (page.length === 0) return;
                    yield page;
                    const next = options.link_rel_in_response_header
                        ? linkRel(response.headers.link, options.link_rel_in_response_header)
                        : getPath(response.data, options.link_path_in_response_body);
                    if (!next || seen.has(next)) return;
                    seen.add(next);
                    const absolute = /^https?:\/\//i.exec(next);
                    if (absolute) {
                        const url = new URLParts(next);
                        request = { ...request, baseUrlOverride: url.origin, endpoint: url.path };
                    } else {
                        request = { ...request, endpoint: next };
                    }
                    // The link carries every parameter the next page needs.
                    params = {};
                }
            }
            case 'offset': {
                const perPage = options.offset_calculation_method === 'per-page';
                let offset = Number(options.offset_start_value || 0);
                for (;;) {
                    put(options.offset_name_in_request, String(offset));
                    const response = await fetchPage();
                    const page = items(response.data);
                    if (page.length === 0) return;
                    yield page;
                    if (options.limit && page.length < Number(options.limit)) return;
                    offset += perPage ? 1 : page.length;
                }
            }
            default:
                throw new Error(
                    `paginate needs a pagination type (cursor, link or offset), from the provider or the call's \`paginate\` option; got ${JSON.stringify(options.type)}`,
                );
        }
    }

    async batchSave(records, model) {
        call('batchSave', { records, model });
        return true;
    }

    async batchSend(records, model) {
        return this.batchSave(records, model);
    }

    async batchUpdate(records, model) {
        call('batchUpdate', { records, model });
        return true;
    }

    async batchDelete(records, model) {
        call('batchDelete', { records, model });
        return true;
    }

    async trackDeletesStart(model) {
        call('trackDeletesStart', { model });
    }

    async trackDeletesEnd(model) {
        return call('trackDeletesEnd', { model });
    }

    async getConnection() {
        return call('getConnection', {});
    }

    async getMetadata() {
        return call('getMetadata', {}) || {};
    }

    async setMetadata(metadata) {
        return call('setMetadata', { metadata });
    }

    async updateMetadata(metadata) {
        return call('updateMetadata', { metadata });
    }

    async getCheckpoint() {
        return call('getCheckpoint', {});
    }

    async saveCheckpoint(checkpoint) {
        call('saveCheckpoint', { checkpoint });
    }

    async clearCheckpoint() {
        call('clearCheckpoint', {});
    }

    async getEnvironmentVariables() {
        return call('getEnvironmentVariables', {});
    }

    setLogger({ level }) {
        if (level in LEVELS) this.logLevel = LEVELS[level];
        if (level === 'off') this.logLevel = Infinity;
    }

    async log(...args) {
        let level = 'info';
        const last = args[args.length - 1];
        if (args.length > 1 && last && typeof last === 'object' && typeof last.level === 'string') {
            level = last.level;
            args.pop();
        }
        if ((LEVELS[level] ?? 1) < this.logLevel) return;
        const [message, ...rest] = args;
        call('log', {
            level: level === 'verbose' || level === 'silly' ? 'debug' : level === 'http' ? 'info' : level,
            message: typeof message === 'string' ? message : JSON.stringify(message),
            payload: rest.length === 0 ? undefined : rest.length === 1 ? rest[0] : rest,
        });
    }
}

// Enough of URL for absolute pagination links (QuickJS has no URL class).
class URLParts {
    constructor(text) {
        const match = /^(https?:\/\/[^/?#]+)([^#]*)/i.exec(text);
        this.origin = match[1];
        this.path = match[2] || '/';
    }
}

export async function __run(module, context) {
    const nango = new Nango(context);
    globalThis.console = {
        log: (...a) => nango.log(...a),
        info: (...a) => nango.log(...a),
        warn: (...a) => nango.log(...a, { level: 'warn' }),
        error: (...a) => nango.log(...a, { level: 'error' }),
        debug: (...a) => nango.log(...a, { level: 'debug' }),
    };
    const definition = module.default;
    let exec;
    if (definition && typeof definition === 'object' && typeof definition.exec === 'function') {
        exec = definition.exec;
    } else if (typeof definition === 'function') {
        exec = definition;
    } else {
        call('fail', {
            type: 'invalid_function',
            message: 'the function must `export default` an async function, createSync({...}) or createAction({...})',
        });
        return;
    }
    try {
        const output = await exec(nango, context.input);
        call('output', output === undefined ? null : output);
    } catch (error) {
        const report = { message: String(error && error.message !== undefined ? error.message : error) };
        if (error instanceof ActionError) {
            report.type = error.type;
            report.payload = error.payload;
        } else if (error && error.type) {
            report.type = error.type;
        }
        if (error && error.response) report.response = error.response;
        if (error && error.stack) report.stack = String(error.stack);
        call('fail', report);
    }
}
