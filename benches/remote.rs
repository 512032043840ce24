//! The end-to-end set-up the benchmark rows share: one real sshd on loopback, an `exec ssh …
//! imsg-sim "$@"` wrapper to it (what users run today), a bridge config for either transport, so
//! two sides of a row differ only in the transport, and the `scp` and file helpers of the attachment rows.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sshd::Sshd;

/// The two transports a row compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The bridge's own SSH client (russh) to the same sshd.
    Native,
    /// `transport: "process"` with the wrapper as `cliPath`: one `ssh` process carries `imsg rpc`.
    Wrapper,
}

impl Transport {
    pub const BOTH: [Transport; 2] = [Transport::Native, Transport::Wrapper];

    pub fn slug(self) -> &'static str {
        match self {
            Transport::Native => "native",
            Transport::Wrapper => "wrapper",
        }
    }

    /// The name of this side in the result table.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Native => "native ssh (russh)",
            Transport::Wrapper => "exec ssh wrapper process",
        }
    }
}

pub struct Remote {
    pub sshd: Sshd,
    wrapper: PathBuf,
}

impl Remote {
    /// Start an sshd and write the wrapper to it as `work/<name>-imsg-ssh`.
    pub fn start(work: &Path, name: &str) -> Self {
        let sshd = Sshd::start();
        let sim = env!("CARGO_BIN_EXE_imsg-sim");
        let wrapper = work.join(format!("{name}-imsg-ssh"));
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec ssh -T -o BatchMode=yes -p {} -i {} -o UserKnownHostsFile={} {}@127.0.0.1 {sim} \"$@\"\n",
                sshd.port,
                sshd.client_key.display(),
                sshd.known_hosts.display(),
                sshd.user
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Self { sshd, wrapper }
    }

    /// The wrapper script (`exec ssh -T … imsg-sim "$@"`), for benchmarks that run it themselves.
    pub fn wrapper(&self) -> &Path {
        &self.wrapper
    }

    /// The account's `ssh: { … }` block for the bridge's own client to this sshd, with `extra`
    /// (e.g. `controlPersistMs: 0`) added inside it.
    pub fn ssh_block(&self, extra: &str) -> String {
        format!(
            "ssh: {{ host: \"127.0.0.1\", port: {}, user: {:?}, identityFile: {:?}, knownHostsFile: {:?}, remoteCliPath: {:?}, useAgent: false, {extra} }}",
            self.sshd.port,
            self.sshd.user,
            self.sshd.client_key.display().to_string(),
            self.sshd.known_hosts.display().to_string(),
            env!("CARGO_BIN_EXE_imsg-sim"),
        )
    }

    /// Write `dir/config.json5`: every DM let through, state in `dir/state`, `bridge_extra` added
    /// to the `bridge` section (e.g. `replay: {…},`).
    pub fn config(&self, transport: Transport, dir: &Path, db: &Path, bridge_extra: &str) -> PathBuf {
        let target = match transport {
            Transport::Native => self.ssh_block(""),
            Transport::Wrapper => format!(
                "transport: \"process\", cliPath: {:?}",
                self.wrapper.display().to_string()
            ),
        };
        let config = dir.join("config.json5");
        std::fs::write(
            &config,
            format!(
                "{{ channels: {{ imessage: {{ {target}, dbPath: {:?}, dmPolicy: \"open\", allowFrom: [\"*\"] }} }}, bridge: {{ {bridge_extra} stateDir: {:?} }} }}",
                db.display().to_string(),
                dir.join("state").display().to_string()
            ),
        )
        .unwrap();
        config
    }
}

/// What OpenClaw runs per attachment (with `remoteHost` set): one `scp` of `file` to
/// `out/download`, against the same server.
pub fn scp(sshd: &Sshd, file: &Path, out: &Path) {
    let status = Command::new("scp")
        .args([
            "-q",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-P",
        ])
        .arg(sshd.port.to_string())
        .arg("-i")
        .arg(&sshd.client_key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
        .arg("--")
        .arg(format!("{}@127.0.0.1:{}", sshd.user, file.display()))
        .arg(out.join("download"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// `len` deterministic bytes that do not compress, written to `path`.
pub fn write_random(path: &Path, len: usize, seed: u64) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    std::fs::write(path, bytes).unwrap();
}
