//! Authentication in OpenSSH's order: `none` (learns the allowed methods; what Tailscale SSH uses),
//! then agent identities (only those matching the configured identity files, so sshd's MaxAuthTries is
//! not spent on unrelated keys), then identity files (a `-cert.pub` beside a key is tried first).
//! Passphrases come from the environment variable the config names, never from the config itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::PublicKey;
use russh::keys::{self, PrivateKeyWithHashAlg};
use tracing::debug;

use super::handler::ClientHandler;
use super::{SshError, SshTarget};

/// What worked, for logs and doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    Agent { comment: String },
    Key { path: PathBuf },
    Certificate { path: PathBuf },
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMethod::None => f.write_str("none"),
            AuthMethod::Agent { comment } => write!(f, "publickey (agent key {comment})"),
            AuthMethod::Key { path } => write!(f, "publickey ({})", path.display()),
            AuthMethod::Certificate { path } => write!(f, "certificate ({})", path.display()),
        }
    }
}

pub async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    target: &SshTarget,
) -> Result<AuthMethod, SshError> {
    let user = target.user.as_str();
    let mut tried: Vec<String> = Vec::new();
    let allowed = match handle.authenticate_none(user).await.map_err(SshError::Ssh)? {
        AuthResult::Success => return Ok(AuthMethod::None),
        AuthResult::Failure {
            remaining_methods, ..
        } => method_names(&remaining_methods),
    };
    tried.push("none".into());

    let identities = load_public_identities(&target.identity_files);
    if target.use_agent
        && let Some(method) = try_agent(handle, user, target, &identities, &mut tried).await?
    {
        return Ok(method);
    }

    for path in &target.identity_files {
        if !path.exists() {
            if target.identities_explicit {
                tried.push(format!("{} (missing)", path.display()));
            }
            continue;
        }
        match try_key_file(handle, user, path, target.identity_passphrase_env.as_deref()).await {
            Ok(Some(method)) => return Ok(method),
            Ok(None) => tried.push(format!("publickey ({})", path.display())),
            Err(note) => tried.push(format!("{} ({note})", path.display())),
        }
    }
    Err(SshError::Auth {
        user: user.to_string(),
        host: target.host.clone(),
        tried,
        allowed,
        host_key_unverified: None,
    })
}

async fn try_agent(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    target: &SshTarget,
    identities: &[PublicKey],
    tried: &mut Vec<String>,
) -> Result<Option<AuthMethod>, SshError> {
    let mut agent = match AgentClient::connect_env().await {
        Ok(agent) => agent,
        Err(err) => {
            debug!(%err, "no ssh-agent");
            return Ok(None);
        }
    };
    if let Some(binding) = handle.agent_session_binding() {
        // Needed for destination-constrained keys; harmless otherwise.
        let _ = agent.bind_session(binding, false).await;
    }
    let offered = agent.request_identities().await.unwrap_or_default();
    let mut count = 0;
    for identity in offered {
        let key = identity.public_key().into_owned();
        if target.identities_explicit && !identities.iter().any(|id| id.key_data() == key.key_data()) {
            continue;
        }
        count += 1;
        let hash = if key.algorithm().is_rsa() {
            handle.best_supported_rsa_hash().await?.flatten()
        } else {
            None
        };
        let comment = key.comment().to_string();
        match handle
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
        {
            Ok(AuthResult::Success) => return Ok(Some(AuthMethod::Agent { comment })),
            Ok(AuthResult::Failure { .. }) => {}
            Err(err) => debug!(%err, "agent could not sign"),
        }
    }
    tried.push(format!(
        "publickey (agent: {count} key{})",
        if count == 1 { "" } else { "s" }
    ));
    Ok(None)
}

/// `Ok(None)`: the server refused the key. `Err(note)`: the key could not be used at all.
async fn try_key_file(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    path: &Path,
    passphrase_env: Option<&str>,
) -> Result<Option<AuthMethod>, String> {
    let passphrase = passphrase_env.and_then(|name| std::env::var(name).ok());
    let key = match keys::load_secret_key(path, passphrase.as_deref()) {
        Ok(key) => Arc::new(key),
        Err(keys::Error::KeyIsEncrypted) => {
            return Err(match passphrase_env {
                Some(name) => format!("encrypted; ${name} is not set"),
                None => {
                    "encrypted; set ssh.identityPassphraseEnv to the variable holding its passphrase".into()
                }
            });
        }
        Err(err) => {
            return Err(match (passphrase_env, passphrase.is_some()) {
                (Some(name), true) => {
                    format!("cannot decrypt it with the passphrase in ${name} (wrong passphrase?): {err}")
                }
                _ => format!("unreadable: {err}"),
            });
        }
    };
    let cert_path = PathBuf::from(format!("{}-cert.pub", path.display()));
    if let Ok(cert) = keys::load_openssh_certificate(&cert_path) {
        match handle.authenticate_openssh_cert(user, key.clone(), cert).await {
            Ok(AuthResult::Success) => return Ok(Some(AuthMethod::Certificate { path: cert_path })),
            Ok(AuthResult::Failure { .. }) => debug!(path = %cert_path.display(), "certificate refused"),
            Err(err) => debug!(%err, "certificate auth failed"),
        }
    }
    // RSA keys must sign with rsa-sha2-*: plain ssh-rsa (SHA-1) is refused by OpenSSH ≥ 8.8.
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|e| e.to_string())?
        .flatten();
    match handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
        .await
    {
        Ok(AuthResult::Success) => Ok(Some(AuthMethod::Key {
            path: path.to_path_buf(),
        })),
        Ok(AuthResult::Failure { .. }) => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

/// Public halves of the identity files (`<file>.pub`), to pick the matching agent identities.
fn load_public_identities(files: &[PathBuf]) -> Vec<PublicKey> {
    files
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(format!("{}.pub", path.display())).ok()?;
            PublicKey::from_openssh(text.trim()).ok()
        })
        .collect()
}

/// `publickey, keyboard-interactive` rather than the set's Debug form.
fn method_names(methods: &russh::MethodSet) -> String {
    let names: Vec<&str> = methods.iter().map(<&str>::from).collect();
    if names.is_empty() {
        "no further methods".to_string()
    } else {
        names.join(", ")
    }
}
