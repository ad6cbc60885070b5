// Test providers for the credential flows, whose credentials are checked by a verification
// call to an upstream on loopback.

/** Providers whose credentials are checked by a verification call to `upstreamUrl`. */
export function verifyingCatalog(upstreamUrl) {
    return `
verify-apikey:
    display_name: Verify (API key)
    categories: [other]
    auth_mode: API_KEY
    proxy:
        base_url: ${upstreamUrl}/v1
        headers:
            authorization: Bearer \${apiKey}
        verification:
            method: GET
            endpoints:
                - /workspaces/\${connectionConfig.workspace}/me
    credentials:
        apiKey:
            type: string
            title: API key
            description: The key from the settings page
    connection_config:
        workspace:
            type: string
            title: Workspace
            description: Your workspace name
            pattern: '^[a-z0-9-]+$'
    docs: https://example.com/verify
verify-basic:
    display_name: Verify (Basic)
    categories: [other]
    auth_mode: BASIC
    proxy:
        base_url: ${upstreamUrl}/basic
        verification:
            method: POST
            endpoints:
                - /check
            headers:
                content-type: application/json
            data:
                ping: true
    docs: https://example.com/verify
open-api:
    display_name: Open API
    categories: [other]
    auth_mode: NONE
    proxy:
        base_url: ${upstreamUrl}/open
    docs: https://example.com/open
`;
}
