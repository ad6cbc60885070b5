use std::path::PathBuf;

use super::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn setup(config: &str) -> (tempdir::Dir, LoadOptions) {
    let dir = tempdir::Dir::new();
    write(&dir.0, "providers/acme.yaml", "display_name: Acme\ndocs: https://acme.example\nauth_mode: OAUTH2\nauthorization_url: https://acme.example/auth\ntoken_url: https://acme.example/token\nproxy:\n  base_url: https://api.acme.example\n");
    let config_path = write(&dir.0, "nango.yaml", config);
    let options = LoadOptions { config_path, config_required: true, catalog_dir: None };
    (dir, options)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!("latchkey-config-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn a_declared_integration_resolves_its_secret_reference() {
    std::env::set_var("LATCHKEY_TEST_ACME_SECRET", "s3cret");
    let (_dir, options) = setup(
        "integrations:\n  acme-prod:\n    provider: acme\n    client_id: cid\n    client_secret: ${env:LATCHKEY_TEST_ACME_SECRET}\n    scopes: a,b\n",
    );
    let config = load(&options, 1).unwrap();
    let integration = &config.integrations["acme-prod"];
    assert_eq!(integration.credentials.client_secret.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(integration.credentials.scopes, vec!["a", "b"]);
    assert!(matches!(integration.origin, crate::integration::Origin::File(_)));
}

#[test]
fn every_problem_is_reported_with_its_line_and_path() {
    let (_dir, options) = setup(
        "integrations:\n  one:\n    provider: nope\n  two:\n    provider: acme\n    client_secret: plain-text\n  three:\n    provder: acme\n",
    );
    let problems = load(&options, 1).unwrap_err();
    let find = |pointer: &str| {
        problems.0.iter().find(|p| p.pointer == pointer).unwrap_or_else(|| panic!("{pointer}: {problems}"))
    };
    // The schema problem stops the load before the semantic checks, so check it on its own.
    let typo = find("/integrations/three");
    assert_eq!(typo.line, Some(7));
    assert_eq!(typo.hint.as_deref(), Some("did you mean `provider`?"));

    let (_dir, options) =
        setup("integrations:\n  one:\n    provider: nope\n  two:\n    provider: acme\n    client_secret: plain-text\n");
    let problems = load(&options, 1).unwrap_err();
    let unknown = problems.0.iter().find(|p| p.pointer == "/integrations/one/provider").unwrap();
    assert_eq!(unknown.line, Some(3));
    let literal = problems.0.iter().find(|p| p.pointer == "/integrations/two/client_secret").unwrap();
    assert_eq!(literal.line, Some(6));
    assert!(literal.hint.as_ref().unwrap().contains("${env:TWO_CLIENT_SECRET}"));
}

#[test]
fn functions_only_entries_of_a_nango_file_do_not_declare_integrations() {
    let (_dir, options) = setup(
        "integrations:\n  hubspot-crm:\n    syncs:\n      contacts:\n        runs: every 30 minutes\n        output: Contact\nmodels:\n  Contact:\n    id: string\n",
    );
    let config = load(&options, 1).unwrap();
    assert!(config.integrations.is_empty());
    assert!(config.models.contains_key("Contact"));
}

#[test]
fn a_missing_default_file_is_an_empty_configuration() {
    let dir = tempdir::Dir::new();
    let options = LoadOptions { config_path: dir.0.join("nango.yaml"), config_required: false, catalog_dir: None };
    let config = load(&options, 1).unwrap();
    assert!(config.integrations.is_empty());
    assert!(!config.catalog.is_empty(), "the built-in catalog is used");
    let required = LoadOptions { config_required: true, ..options };
    assert!(load(&required, 1).is_err());
}

#[test]
fn proxy_settings_are_read_and_checked() {
    let (_dir, options) = setup(
        "logs:\n  retention: 12h\nproxy:\n  connect_timeout: 2s\n  read_timeout: 1m\nrate_limits:\n  acme:\n    per_connection: { requests: 5, interval: 1s }\n",
    );
    let config = load(&options, 1).unwrap();
    assert_eq!(config.log_retention, Duration::from_secs(12 * 3600));
    assert_eq!(config.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.read_timeout, Duration::from_secs(60));
    assert_eq!(config.rate_limits["acme"].per_connection.as_ref().unwrap().requests, Some(5));

    let (_dir, options) =
        setup("logs:\n  retention: 0s\nrate_limits:\n  nope:\n    per_provider: { concurrency: 1 }\n");
    let problems = load(&options, 1).unwrap_err();
    assert!(problems.0.iter().any(|p| p.pointer == "/logs/retention"), "{problems}");
    assert!(problems.0.iter().any(|p| p.pointer == "/rate_limits/nope"), "{problems}");
}
