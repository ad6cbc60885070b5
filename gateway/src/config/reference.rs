//! References to values kept outside the config file: `${env:NAME}` and `${file:PATH}`.
//! Secrets in `nango.yaml` must be references, so that the file can live in version control.

use std::path::Path;

/// Why a value could not be read, and what to do about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub message: String,
    pub hint: String,
}

/// The value of `text`: a reference is resolved, anything else is returned as written. With
/// `secret`, a literal is refused.
pub fn resolve(text: &str, base_dir: &Path, secret: bool, suggested_env: &str) -> Result<String, Unresolved> {
    let reference = text.trim();
    if let Some(name) = reference.strip_prefix("${env:").and_then(|r| r.strip_suffix('}')) {
        return std::env::var(name).map_err(|_| Unresolved {
            message: format!("the environment variable `{name}` is not set"),
            hint: format!("set {name} before starting Latchkey, or point this key at a file with ${{file:PATH}}"),
        });
    }
    if let Some(path) = reference.strip_prefix("${file:").and_then(|r| r.strip_suffix('}')) {
        let full = base_dir.join(path);
        return std::fs::read_to_string(&full).map(|s| s.trim_end_matches(['\n', '\r']).to_string()).map_err(|e| {
            Unresolved {
                message: format!("cannot read `{}`: {e}", full.display()),
                hint: "relative paths start at the config file's directory".to_string(),
            }
        });
    }
    if secret {
        return Err(Unresolved {
            message: "a secret is written here literally".to_string(),
            hint: format!(
                "write ${{env:{suggested_env}}} or ${{file:/run/secrets/…}} and keep the value out of the file"
            ),
        });
    }
    Ok(text.to_string())
}

/// An environment variable name for a secret, for hints: `GITHUB_PROD_CLIENT_SECRET`.
pub fn env_name(integration: &str, key: &str) -> String {
    let mut name: String =
        integration.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    name.push('_');
    name.push_str(&key.to_ascii_uppercase());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_refused_for_secrets_only() {
        let dir = Path::new(".");
        assert_eq!(resolve("abc", dir, false, "X").unwrap(), "abc");
        let e = resolve("abc", dir, true, "GITHUB_CLIENT_SECRET").unwrap_err();
        assert!(e.hint.contains("${env:GITHUB_CLIENT_SECRET}"));
        std::env::set_var("LATCHKEY_TEST_REF", "v");
        assert_eq!(resolve("${env:LATCHKEY_TEST_REF}", dir, true, "X").unwrap(), "v");
        assert!(resolve("${env:LATCHKEY_TEST_UNSET_REF}", dir, true, "X").unwrap_err().message.contains("not set"));
        assert_eq!(env_name("github-prod", "client_secret"), "GITHUB_PROD_CLIENT_SECRET");
    }
}
