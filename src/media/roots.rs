//! Which local files may be sent (docs/security.md, "Outbound media roots"): files named by an agent's
//! reply or the HTTP API must lie under `bridge.outboundMediaRoots`, and nobody, the operator included,
//! sends the state dir's credentials, `~/.ssh`, `/proc`, `/sys` or `/dev`. A prompt-injected agent
//! could otherwise mail the gateway's secrets to whoever wrote the message.
//!
//! The check resolves the file (symlinks followed, `..` resolved) and answers with the real path, which
//! is what the caller reads: a symlink swapped after the check cannot redirect the upload to another file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;

use crate::config::{AgentKind, Config};
use crate::util::escape::escape_controls;

/// The state dir's folder an operator or agent puts files to send in; a default root.
pub const OUTBOUND_DIR: &str = "media/outbound";

/// Who names the file: agents and the API are held to the roots, the operator only to the forbidden
/// places (the operator could read those files anyway; the point is that no command mails them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A reply of the agent (exec, webhook).
    Agent,
    /// `POST /v1/send`.
    Api,
    /// `imsg-bridge send`, the drop-in, the bridge's own texts.
    Operator,
}

impl Caller {
    /// The `caller` label of `imsg_bridge_outbound_media_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Api => "api",
            Self::Operator => "operator",
        }
    }

    fn held_to_roots(self) -> bool {
        match self {
            Self::Agent | Self::Api => true,
            Self::Operator => false,
        }
    }
}

/// A place no caller sends from, with the name the refusal gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub path: PathBuf,
    pub name: String,
}

/// The roots of outbound media and the places never sent from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundRoots {
    /// Agent and API files must lie under one of these (component-wise).
    pub allowed: Vec<PathBuf>,
    /// Refused for every caller, whatever `allowed` says.
    pub forbidden: Vec<Forbidden>,
    /// The bridge's own files (state dir, config file): refused for agents and the API even under a
    /// root, except under `shared`.
    pub private: Vec<PathBuf>,
    /// The parts of `private` that hold media (`stateDir/media`), sendable when under a root.
    pub shared: Vec<PathBuf>,
}

/// Why a file is not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootsError {
    /// The file cannot be resolved (missing, unreadable folder): nothing to check, nothing to send.
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("refusing to send {path}: files under {place} are never sent")]
    Forbidden { path: String, place: String },
    #[error(
        "refusing to send {path}: the bridge's own files (state dir, config) are not sent for an agent or the API"
    )]
    Private { path: String },
    #[error(
        "refusing to send {path}: outside bridge.outboundMediaRoots ({roots}); put the file under a root or add one"
    )]
    Outside { path: String, roots: String },
}

impl RootsError {
    /// The `reason` label of the refusal metric; `None` when the file was not refused but unreadable.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Unreadable { .. } => None,
            Self::Forbidden { .. } | Self::Private { .. } => Some("forbidden"),
            Self::Outside { .. } => Some("outside_roots"),
        }
    }
}

impl OutboundRoots {
    /// The forbidden and private places of a bridge with `state_dir`, run by the user whose home is
    /// `home`, configured by `config_file`; `allowed` as given.
    pub fn new(
        allowed: Vec<PathBuf>,
        state_dir: &Path,
        home: Option<&Path>,
        config_file: Option<&Path>,
    ) -> Self {
        let mut forbidden = vec![Forbidden {
            path: state_dir.join("credentials"),
            name: "the state dir's credentials".into(),
        }];
        if let Some(home) = home {
            forbidden.push(Forbidden {
                path: home.join(".ssh"),
                name: "~/.ssh".into(),
            });
        }
        for system in ["/proc", "/sys", "/dev"] {
            forbidden.push(Forbidden {
                path: PathBuf::from(system),
                name: system.into(),
            });
        }
        Self {
            allowed,
            forbidden,
            private: std::iter::once(state_dir.to_path_buf())
                .chain(config_file.map(Path::to_path_buf))
                .collect(),
            shared: vec![state_dir.join("media")],
        }
    }

    /// The real path of `file` when `caller` may send it. Relative paths are taken from the current
    /// directory, like every read of the bridge.
    pub fn check(&self, file: &Path, caller: Caller) -> Result<PathBuf, RootsError> {
        let shown = || escape_controls(&file.display().to_string()).into_owned();
        let lexical = absolute(file);
        // The path as written is checked too: `/proc/self/fd/0` may resolve to a pipe's name.
        if let Some(place) = self.forbidden_place(&lexical) {
            return Err(RootsError::Forbidden { path: shown(), place });
        }
        let real = std::fs::canonicalize(&lexical).map_err(|e| RootsError::Unreadable {
            path: shown(),
            reason: e.to_string(),
        })?;
        // A file reached through a link is named both ways: what was asked and what would be read.
        let shown = || {
            if real == lexical {
                shown()
            } else {
                format!("{} ({})", shown(), escape_controls(&real.display().to_string()))
            }
        };
        if let Some(place) = self.forbidden_place(&real) {
            return Err(RootsError::Forbidden { path: shown(), place });
        }
        if !caller.held_to_roots() {
            return Ok(real);
        }
        if under_any(&real, &self.private) && !under_any(&real, &self.shared) {
            return Err(RootsError::Private { path: shown() });
        }
        if !under_any(&real, &self.allowed) {
            return Err(RootsError::Outside {
                path: shown(),
                roots: self.roots_list(),
            });
        }
        Ok(real)
    }

    fn forbidden_place(&self, path: &Path) -> Option<String> {
        self.forbidden
            .iter()
            .find(|f| under_any(path, std::slice::from_ref(&f.path)))
            .map(|f| f.name.clone())
    }

    fn roots_list(&self) -> String {
        if self.allowed.is_empty() {
            return "none".into();
        }
        let roots: Vec<String> = self.allowed.iter().map(|r| r.display().to_string()).collect();
        escape_controls(&roots.join(", ")).into_owned()
    }

    /// The places an operator's own send (`imsg-bridge send`, the drop-in) never reads from; it has
    /// no roots, as it sends from anywhere else.
    pub fn for_operator(config: &Config) -> Self {
        let home = crate::util::home_dir();
        Self::new(
            Vec::new(),
            &config.bridge.state_dir,
            home.as_deref(),
            config.path.as_deref(),
        )
    }

    /// The roots of a running bridge: `bridge.outboundMediaRoots`, or the defaults (see
    /// [`default_allowed`]) with the exec agent's working directory, which is the bridge's own.
    pub fn from_config(config: &Config) -> Self {
        let state_dir = &config.bridge.state_dir;
        let home = crate::util::home_dir();
        let allowed = match &config.bridge.outbound_media_roots {
            Some(roots) => roots.clone(),
            None => {
                let exec = config.bridge.agent.kind() == AgentKind::Exec;
                let cwd = exec.then(|| std::env::current_dir().ok()).flatten();
                let (allowed, left_out) = default_allowed(state_dir, cwd.as_deref(), home.as_deref());
                if let Some(cwd) = left_out {
                    warn_left_out(&cwd);
                }
                allowed
            }
        };
        Self::new(allowed, state_dir, home.as_deref(), config.path.as_deref())
    }
}

/// The default roots: `stateDir/media/outbound`, and the exec agent's working directory `agent_cwd`
/// unless it is `/` or holds the home directory (a home holds every secret of the user: cloud keys,
/// tokens, shell history). The second value is a working directory left out for that reason.
pub fn default_allowed(
    state_dir: &Path,
    agent_cwd: Option<&Path>,
    home: Option<&Path>,
) -> (Vec<PathBuf>, Option<PathBuf>) {
    let mut allowed = vec![state_dir.join(OUTBOUND_DIR)];
    let Some(cwd) = agent_cwd else {
        return (allowed, None);
    };
    let cwd = absolute(cwd);
    let too_wide = cwd.parent().is_none() || home.is_some_and(|home| absolute(home).starts_with(&cwd));
    if too_wide {
        return (allowed, Some(cwd));
    }
    allowed.push(cwd);
    (allowed, None)
}

/// Said once per process: every account builds its roots from the same working directory.
fn warn_left_out(cwd: &Path) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        warn!(
            cwd = %escape_controls(&cwd.display().to_string()),
            "the exec agent's working directory is / or holds the home directory: not an outbound media \
             root; agents send files from stateDir/media/outbound or set bridge.outboundMediaRoots"
        );
    }
}

/// Whether `path` lies under (or is) one of `roots`, compared by whole components and against each
/// root's real path as well as its written one (a state dir reached through a symlink).
fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|root| {
        let written = absolute(root);
        path.starts_with(&written) || std::fs::canonicalize(&written).is_ok_and(|real| path.starts_with(real))
    })
}

/// `path` made absolute against the current directory, with `.` and `..` resolved by name (the real
/// path comes from `canonicalize`; this is the path as written, for the checks that need no file).
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    crate::util::fold_dots(&joined)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A state dir, a home with `.ssh`, a root with a photo, a sibling folder sharing its prefix.
    struct World {
        dir: tempfile::TempDir,
    }

    impl World {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for folder in [
                "state/credentials",
                "state/media/outbound",
                "home/.ssh",
                "srv/media",
                "srv/media2",
            ] {
                std::fs::create_dir_all(dir.path().join(folder)).unwrap();
            }
            for file in [
                "state/credentials/imessage-pairing.json",
                "state/cursors.json",
                "state/media/outbound/ok.jpg",
                "home/.ssh/id_ed25519",
                "home/notes.txt",
                "srv/media/photo.jpg",
                "srv/media2/photo.jpg",
                "config.json5",
            ] {
                std::fs::write(dir.path().join(file), b"x").unwrap();
            }
            Self { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn roots(&self, allowed: &[&str]) -> OutboundRoots {
            OutboundRoots::new(
                allowed.iter().map(|r| self.path(r)).collect(),
                &self.path("state"),
                Some(&self.path("home")),
                Some(&self.path("config.json5")),
            )
        }
    }

    /// `Ok` or the refusal's metric reason (`unreadable` for a file that cannot be resolved).
    fn outcome(result: Result<PathBuf, RootsError>) -> Result<PathBuf, &'static str> {
        result.map_err(|e| e.reason().unwrap_or("unreadable"))
    }

    #[test]
    fn agents_and_the_api_send_only_from_under_a_root_the_operator_from_anywhere_not_forbidden() {
        let w = World::new();
        let roots = w.roots(&["state/media/outbound", "srv/media"]);
        let cases: &[(&str, Caller, Result<(), &str>)] = &[
            ("srv/media/photo.jpg", Caller::Agent, Ok(())),
            ("srv/media/photo.jpg", Caller::Api, Ok(())),
            ("state/media/outbound/ok.jpg", Caller::Agent, Ok(())),
            ("home/notes.txt", Caller::Agent, Err("outside_roots")),
            ("home/notes.txt", Caller::Api, Err("outside_roots")),
            ("home/notes.txt", Caller::Operator, Ok(())),
            // A sibling sharing the root's name as a prefix is not under it.
            ("srv/media2/photo.jpg", Caller::Agent, Err("outside_roots")),
            ("home/.ssh/id_ed25519", Caller::Operator, Err("forbidden")),
            ("home/.ssh/id_ed25519", Caller::Agent, Err("forbidden")),
            (
                "state/credentials/imessage-pairing.json",
                Caller::Operator,
                Err("forbidden"),
            ),
            ("srv/media/missing.jpg", Caller::Agent, Err("unreadable")),
        ];
        for (file, caller, want) in cases {
            let got = outcome(roots.check(&w.path(file), *caller));
            let want = want.map(|()| std::fs::canonicalize(w.path(file)).unwrap());
            assert_eq!(got, want, "{file} for {caller:?}");
        }
    }

    #[test]
    fn the_real_path_decides_dot_dot_and_symlinks_included() {
        let w = World::new();
        let roots = w.roots(&["srv/media"]);
        symlink(w.path("home/.ssh/id_ed25519"), w.path("srv/media/key.jpg")).unwrap();
        symlink(w.path("home/notes.txt"), w.path("srv/media/notes.jpg")).unwrap();
        symlink(w.path("srv/media/photo.jpg"), w.path("home/link.jpg")).unwrap();
        let cases: &[(&str, Caller, Result<&str, &str>)] = &[
            (
                "srv/media/../../home/notes.txt",
                Caller::Agent,
                Err("outside_roots"),
            ),
            ("srv/media/./photo.jpg", Caller::Agent, Ok("srv/media/photo.jpg")),
            ("srv/media/key.jpg", Caller::Agent, Err("forbidden")),
            ("srv/media/key.jpg", Caller::Operator, Err("forbidden")),
            ("srv/media/notes.jpg", Caller::Agent, Err("outside_roots")),
            ("srv/media/notes.jpg", Caller::Operator, Ok("home/notes.txt")),
            // A link from outside into a root sends the file in the root.
            ("home/link.jpg", Caller::Agent, Ok("srv/media/photo.jpg")),
        ];
        for (file, caller, want) in cases {
            let got = outcome(roots.check(&w.path(file), *caller));
            let want = want.map(|real| std::fs::canonicalize(w.path(real)).unwrap());
            assert_eq!(got, want, "{file} for {caller:?}");
        }
    }

    #[test]
    fn forbidden_places_win_over_a_root_even_when_the_root_is_slash() {
        let w = World::new();
        let roots = OutboundRoots {
            allowed: vec![PathBuf::from("/")],
            ..w.roots(&[])
        };
        for file in [
            "/proc/self/environ",
            "/proc/self/fd/0",
            "/dev/null",
            "/sys/kernel",
        ] {
            for caller in [Caller::Agent, Caller::Api, Caller::Operator] {
                let got = outcome(roots.check(Path::new(file), caller));
                assert_eq!(got, Err("forbidden"), "{file} for {caller:?}");
            }
        }
        let key = w.path("home/.ssh/id_ed25519");
        assert_eq!(outcome(roots.check(&key, Caller::Api)), Err("forbidden"));
        assert!(roots.check(&w.path("home/notes.txt"), Caller::Api).is_ok());
    }

    #[test]
    fn the_bridges_own_files_are_not_sent_for_agents_even_under_a_root_but_its_media_are() {
        let w = World::new();
        let roots = w.roots(&[""]);
        let cases: &[(&str, Caller, Result<(), &str>)] = &[
            ("state/cursors.json", Caller::Agent, Err("forbidden")),
            ("config.json5", Caller::Api, Err("forbidden")),
            ("config.json5", Caller::Operator, Ok(())),
            ("state/media/outbound/ok.jpg", Caller::Agent, Ok(())),
        ];
        for (file, caller, want) in cases {
            let got = outcome(roots.check(&w.path(file), *caller)).map(|_| ());
            assert_eq!(got, *want, "{file} for {caller:?}");
        }
    }

    #[test]
    fn refusals_are_one_line_naming_the_file_the_rule_and_the_remedy() {
        let w = World::new();
        let roots = w.roots(&["srv/media"]);
        let notes = w.path("home/notes.txt");
        let err = roots.check(&notes, Caller::Agent).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to send {}: outside bridge.outboundMediaRoots ({}); put the file under a root or add one",
                notes.display(),
                w.path("srv/media").display()
            )
        );
        let key = w.path("home/.ssh/id_ed25519");
        let err = roots.check(&key, Caller::Operator).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to send {}: files under ~/.ssh are never sent",
                key.display()
            )
        );
        let hostile = w.path("srv/media/a\nb.jpg");
        symlink(&notes, &hostile).unwrap();
        let err = roots.check(&hostile, Caller::Agent).unwrap_err().to_string();
        assert!(
            !err.contains('\n') && err.contains("a\\nb.jpg") && err.contains("notes.txt"),
            "{err}"
        );
        let none = w.roots(&[]).check(&notes, Caller::Api).unwrap_err().to_string();
        assert!(
            none.contains("outside bridge.outboundMediaRoots (none)"),
            "{none}"
        );
    }

    #[test]
    fn the_default_roots_are_the_outbound_folder_and_a_narrow_enough_agent_directory() {
        let state = Path::new("/var/lib/imsg-bridge");
        let outbound = PathBuf::from("/var/lib/imsg-bridge/media/outbound");
        let home = Path::new("/home/agent");
        let cases: &[(Option<&str>, &[&str], Option<&str>)] = &[
            (None, &[], None),
            (Some("/home/agent/work"), &["/home/agent/work"], None),
            (Some("/srv/bot/./app/.."), &["/srv/bot"], None),
            (Some("/"), &[], Some("/")),
            (Some("/home/agent"), &[], Some("/home/agent")),
            (Some("/home"), &[], Some("/home")),
        ];
        for (cwd, extra, left_out) in cases {
            let (allowed, out) = default_allowed(state, cwd.map(Path::new), Some(home));
            let want: Vec<PathBuf> = std::iter::once(outbound.clone())
                .chain(extra.iter().map(PathBuf::from))
                .collect();
            assert_eq!(allowed, want, "{cwd:?}");
            assert_eq!(out, left_out.map(PathBuf::from), "{cwd:?}");
        }
    }
}
