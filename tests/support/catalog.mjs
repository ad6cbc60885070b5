// Test providers in Nango's single-file catalog format, pointed at upstreams on loopback. They
// use the same template features as real entries (header and query templates, connection
// config in the base URL, `||` fallbacks).

/** A catalog with one provider per auth mode, all proxying to `upstreamUrl`. */
export function loopbackCatalog(upstreamUrl) {
    const { port } = new URL(upstreamUrl);
    return `
acme-apikey:
    display_name: Acme (API key)
    categories: [other]
    auth_mode: API_KEY
    proxy:
        base_url: ${upstreamUrl}/api/v1
        headers:
            x-api-key: \${apiKey}
            x-acme-region: \${connectionConfig.region}
            accept: application/json
        query:
            key: \${apiKey}
    credentials:
        apiKey:
            type: string
            title: API key
            description: The key from Acme's settings page
    connection_config:
        region:
            type: string
            title: Region
            description: Optional data region
            optional: true
    docs: https://example.com/acme
acme-basic:
    display_name: Acme (Basic)
    categories: [other]
    auth_mode: BASIC
    proxy:
        base_url: http://\${connectionConfig.host}:${port}/basic || ${upstreamUrl}/basic-default
    connection_config:
        host:
            type: string
            title: Host
            description: The host of the Acme server
            optional: true
    docs: https://example.com/acme
acme-oauth:
    display_name: Acme (OAuth 2)
    categories: [other]
    auth_mode: OAUTH2
    authorization_url: ${upstreamUrl}/oauth/authorize
    token_url: ${upstreamUrl}/oauth/token
    proxy:
        base_url: ${upstreamUrl}/tenants/\${connectionConfig.tenant}
        headers:
            user-agent: acme-client
    connection_config:
        tenant:
            type: string
            title: Tenant
            description: The tenant id
    docs: https://example.com/acme
`;
}
