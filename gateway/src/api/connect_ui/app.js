// Latchkey's Connect UI. It runs in the iframe that `nango.openConnectUI()` opens (or on its own
// from a connect link), lists the session's integrations, renders the provider's forms, runs
// the flow through the gateway's auth endpoints and reports to the parent page in the message
// protocol of @nangohq/frontend: ready, connect, error, close.
(function () {
    'use strict';

    const query = new URLSearchParams(location.search);
    const apiURL = (query.get('apiURL') || location.origin).replace(/\/+$/, '');
    const embedded = window.parent !== window;
    const view = document.getElementById('view');
    const title = document.getElementById('title');
    const back = document.getElementById('back');
    let token = query.get('session_token');
    let session = null;
    let integrations = [];
    let finished = false;

    function tell(message) {
        if (embedded) window.parent.postMessage(message, '*');
    }

    function close() {
        tell({ type: 'close' });
        if (!embedded) window.close();
    }

    function el(tag, attrs, ...children) {
        const node = document.createElement(tag);
        for (const [k, v] of Object.entries(attrs || {})) {
            if (v === undefined || v === null || v === false) continue;
            if (k === 'class') node.className = v;
            else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
            else node.setAttribute(k, v === true ? '' : v);
        }
        for (const child of children.flat()) {
            if (child !== undefined && child !== null) node.append(child);
        }
        return node;
    }

    function show(heading, ...children) {
        title.textContent = heading;
        view.replaceChildren(...children);
        const focusable = view.querySelector('input, button');
        if (focusable) focusable.focus();
    }

    function showError(message) {
        back.hidden = true;
        show('Something went wrong', el('div', { class: 'center' }, el('p', { class: 'error', role: 'alert' }, message)));
    }

    async function api(path, init) {
        const res = await fetch(apiURL + path, init || { headers: { authorization: `Bearer ${token}` } });
        let body = null;
        try {
            body = await res.json();
        } catch {
            body = null;
        }
        if (!res.ok || (body && body.error)) {
            const error = (body && body.error) || {};
            const failure = new Error(error.message || `The gateway answered ${res.status}`);
            failure.code = error.code || 'unknown_error';
            throw failure;
        }
        return body;
    }

    function applyTheme(settings) {
        const mode = query.get('theme') || settings.defaultTheme || 'system';
        const dark = mode === 'dark' || (mode === 'system' && matchMedia('(prefers-color-scheme: dark)').matches);
        document.documentElement.classList.toggle('dark', dark);
        const colours = (settings.theme && settings.theme[dark ? 'dark' : 'light']) || {};
        const root = document.documentElement.style;
        if (colours.primary) root.setProperty('--primary', colours.primary);
        if (colours.background) root.setProperty('--bg', colours.background);
        if (colours.text) root.setProperty('--text', colours.text);
        if (settings.logoUrl) {
            const brand = document.getElementById('brand');
            brand.src = settings.logoUrl;
            brand.hidden = false;
        }
        document.getElementById('watermark').hidden = !settings.showWatermark;
    }

    async function start() {
        try {
            const [s, list] = await Promise.all([api('/connect/session'), api('/integrations')]);
            session = s.data;
            integrations = list.data;
            applyTheme(session.connectUISettings || {});
        } catch (e) {
            showError(e.message);
            tell({ type: 'error', payload: { errorType: e.code, errorMessage: e.message } });
            return;
        }
        if (integrations.length === 1 && (session.allowed_integrations || []).length === 1) {
            await choose(integrations[0], false);
        } else {
            list();
        }
    }

    function list() {
        back.hidden = true;
        if (integrations.length === 0) {
            show('Connect an account', el('p', { class: 'muted' }, 'There is nothing to connect in this session.'));
            return;
        }
        const items = integrations.map((i) =>
            el(
                'li',
                null,
                el(
                    'button',
                    { type: 'button', class: 'integration', 'data-key': i.unique_key, onclick: () => choose(i, true) },
                    el('img', { src: i.logo, alt: '', width: 32, height: 32 }),
                    el('span', null, i.display_name)
                )
            )
        );
        show('Connect an account', el('p', { class: 'muted' }, 'Choose the service to connect.'), el('ul', { class: 'integrations' }, items));
    }

    /** The form fields of a provider's schema block, in their declared order. */
    function fieldsOf(block, defaults) {
        return Object.entries(block || {})
            .filter(([name, f]) => !f.automated && !f.hidden && !(defaults && name in defaults))
            .sort((a, b) => (a[1].order ?? 99) - (b[1].order ?? 99));
    }

    function input(group, name, field, secret) {
        const id = `${group}-${name}`;
        const hintId = `${id}-hint`;
        const errorId = `${id}-error`;
        return el(
            'label',
            { for: id },
            field.title || name,
            field.description ? el('span', { class: 'hint', id: hintId }, field.description) : null,
            el(
                'div',
                { class: 'field' },
                field.prefix ? el('span', null, field.prefix) : null,
                el('input', {
                    id,
                    name,
                    'data-group': group,
                    type: secret || field.secret ? 'password' : 'text',
                    required: !field.optional,
                    value: field.default_value,
                    placeholder: field.example,
                    'data-pattern': field.pattern,
                    'aria-describedby': `${field.description ? hintId : ''} ${errorId}`.trim(),
                    autocomplete: 'off'
                }),
                field.suffix ? el('span', null, field.suffix) : null
            ),
            el('p', { class: 'error', id: errorId, role: 'alert', hidden: true })
        );
    }

    async function choose(integration, canGoBack) {
        back.hidden = !canGoBack;
        show(integration.display_name, el('p', { class: 'muted' }, 'Loading…'));
        let provider;
        try {
            provider = (await api(`/providers/${encodeURIComponent(integration.provider)}`)).data;
        } catch (e) {
            showError(e.message);
            return;
        }
        const defaults = (session.integrations_config_defaults || {})[integration.unique_key] || {};
        const mode = provider.auth_mode;
        const credentialFields = [];
        if (mode === 'API_KEY') {
            credentialFields.push(['apiKey', { title: 'API key', ...(provider.credentials || {}).apiKey }, true]);
        } else if (mode === 'BASIC') {
            const c = provider.credentials || {};
            credentialFields.push(['username', { title: 'Username', ...c.username }, false]);
            credentialFields.push(['password', { title: 'Password', ...c.password }, true]);
        } else if (mode === 'TWO_STEP' || mode === 'JWT') {
            for (const [name, f] of fieldsOf(provider.credentials)) credentialFields.push([name, f, Boolean(f.secret)]);
        } else if (mode === 'OAUTH2_CC') {
            const c = provider.credentials || {};
            credentialFields.push(['client_id', { title: 'Client ID', ...c.client_id }, false]);
            credentialFields.push(['client_secret', { title: 'Client secret', ...c.client_secret }, true]);
        }
        const supported = ['API_KEY', 'BASIC', 'TWO_STEP', 'JWT', 'OAUTH2_CC', 'OAUTH2', 'OAUTH1', 'APP', 'NONE'].includes(mode);
        const configFields = fieldsOf(provider.connection_config, defaults.connection_config);
        const formError = el('p', { class: 'error', role: 'alert', id: 'form-error', hidden: true });
        const submit = el('button', { type: 'submit', class: 'primary', disabled: !supported }, 'Connect');
        const form = el(
            'form',
            { novalidate: true, onsubmit: (e) => { e.preventDefault(); run(integration, provider, form, submit, formError); } },
            el('div', { class: 'provider' }, el('img', { class: 'provider-logo', src: integration.logo, alt: '' }), el('span', { class: 'muted' }, provider.display_name)),
            configFields.map(([name, f]) => input('params', name, f, false)),
            credentialFields.map(([name, f, secret]) => input('credentials', name, f, secret)),
            supported ? null : el('p', { class: 'error', role: 'alert' }, `Connecting ${mode} accounts is not supported by this gateway.`),
            formError,
            submit
        );
        show(integration.display_name, form);
    }

    /** Checks every input; marks the first invalid one and returns false. */
    function validate(form) {
        let first = null;
        for (const field of form.querySelectorAll('input')) {
            const message = field.parentElement.parentElement.querySelector('.error');
            let problem = '';
            if (field.required && !field.value.trim()) problem = 'This field is required.';
            else if (field.value && field.dataset.pattern && !new RegExp(field.dataset.pattern).test(field.value)) {
                problem = 'This value does not have the expected format.';
            }
            field.setAttribute('aria-invalid', problem ? 'true' : 'false');
            message.textContent = problem;
            message.hidden = !problem;
            if (problem && !first) first = field;
        }
        if (first) first.focus();
        return !first;
    }

    async function run(integration, provider, form, submit, formError) {
        formError.hidden = true;
        if (!validate(form)) return;
        const params = new URLSearchParams({ connect_session_token: token });
        const credentials = {};
        for (const field of form.querySelectorAll('input')) {
            if (field.dataset.group === 'params') {
                if (field.value) params.set(`params[${field.name}]`, field.value);
            } else {
                credentials[field.name] = field.value;
            }
        }
        const key = encodeURIComponent(integration.unique_key);
        submit.disabled = true;
        submit.textContent = 'Connecting…';
        try {
            let result;
            if (['OAUTH2', 'OAUTH1', 'APP'].includes(provider.auth_mode)) {
                result = await popup(`${apiURL}/oauth/connect/${key}`, params, integration.unique_key);
            } else {
                const path = {
                    API_KEY: 'api-auth/api-key',
                    BASIC: 'api-auth/basic',
                    TWO_STEP: 'auth/two-step',
                    JWT: 'auth/jwt',
                    OAUTH2_CC: 'oauth2/auth',
                    NONE: 'auth/unauthenticated'
                }[provider.auth_mode];
                const body = await api(`/${path}/${key}?${params}`, {
                    method: 'POST',
                    headers: { 'content-type': 'application/json' },
                    body: provider.auth_mode === 'NONE' ? undefined : JSON.stringify(credentials)
                });
                result = { providerConfigKey: body.providerConfigKey, connectionId: body.connectionId };
            }
            succeed(integration, result);
        } catch (e) {
            formError.textContent = e.message;
            formError.hidden = false;
            submit.disabled = false;
            submit.textContent = 'Connect';
            tell({ type: 'error', payload: { errorType: e.code || 'unknown_error', errorMessage: e.message } });
        }
    }

    /** The OAuth popup: the gateway names this window's WebSocket, the popup carries the name,
     *  and the result comes back on the socket (the popup's own page also posts it here). */
    function popup(url, params, providerConfigKey) {
        const win = window.open('', '_blank', 'width=500,height=650');
        return new Promise((resolve, reject) => {
            if (!win) {
                const e = new Error('The browser blocked the sign-in window; allow pop-ups and try again.');
                e.code = 'blocked_by_browser';
                reject(e);
                return;
            }
            const ws = new URL((session.websocketsPath || '/'), apiURL);
            ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
            const socket = new WebSocket(ws);
            let closedTimer = null;
            const done = (fn, value) => {
                clearInterval(closedTimer);
                socket.close();
                fn(value);
            };
            socket.onmessage = (event) => {
                const data = JSON.parse(event.data);
                if (data.message_type === 'connection_ack') {
                    params.set('ws_client_id', data.ws_client_id);
                    win.location.href = `${url}?${params}`;
                    if (query.get('detectClosedAuthWindow') === 'true') {
                        closedTimer = setInterval(() => {
                            if (win.closed) {
                                const e = new Error('The sign-in window was closed before it finished.');
                                e.code = 'window_closed';
                                done(reject, e);
                            }
                        }, 500);
                    }
                } else if (data.message_type === 'success') {
                    done(resolve, { providerConfigKey: data.provider_config_key || providerConfigKey, connectionId: data.connection_id });
                } else if (data.message_type === 'error') {
                    const e = new Error(data.error_desc);
                    e.code = data.error_type;
                    done(reject, e);
                }
            };
            socket.onerror = () => {
                const e = new Error('Lost the connection to the gateway.');
                e.code = 'connection_error';
                done(reject, e);
            };
        });
    }

    function succeed(integration, result) {
        finished = true;
        tell({ type: 'connect', payload: { providerConfigKey: result.providerConfigKey, connectionId: result.connectionId } });
        back.hidden = true;
        show(
            'Connected',
            el(
                'div',
                { class: 'center', role: 'status' },
                el('div', { class: 'check', 'aria-hidden': 'true' }, '\u2713'),
                el('p', null, `${integration.display_name} is connected.`),
                el('button', { type: 'button', class: 'primary', id: 'finish', onclick: close }, 'Finish')
            )
        );
    }

    // The OAuth popup's page announces its result; acknowledge it so that it closes.
    window.addEventListener('message', (event) => {
        const data = event.data;
        if (!data || typeof data !== 'object') return;
        if (data.type === 'session_token' && event.source === window.parent && !token) {
            token = data.sessionToken;
            start();
        } else if (typeof data.type === 'string' && data.type.startsWith('nango_oauth_callback_') && event.origin === new URL(apiURL).origin) {
            event.source && event.source.postMessage({ type: 'nango_oauth_callback_ack' }, event.origin);
        }
    });

    document.getElementById('close').addEventListener('click', close);
    document.getElementById('backdrop').addEventListener('click', close);
    back.addEventListener('click', list);
    document.addEventListener('keydown', (e) => {
        if (e.key === 'Escape') close();
    });

    tell({ type: 'ready' });
    if (token) {
        start();
    } else {
        setTimeout(() => {
            if (!token && !finished) showError('No connect session was given; open this page through your application.');
        }, 10_000);
    }
})();
