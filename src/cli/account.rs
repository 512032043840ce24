//! Opening an account for a one-shot command (`chats`, `history`, `send`, `attachments`, `pairing
//! approve`): resolve its transport, start `imsg rpc`, initialize imsg, and stop it all again. The
//! commands keep only their arguments, output and exit codes.

use crate::config::{Account, Config};
use crate::gateway::AccountRuntime;
use crate::imsg::ImsgClient;
use crate::media::Files;
use crate::media::files::RemoteHost;
use crate::rpc::{ClientOptions, RpcClient};
use crate::transport::{self, Peer};

/// An account's imsg, initialized and ready for requests. End it with [`OpenAccount::stop`].
pub(super) struct OpenAccount {
    pub runtime: AccountRuntime,
    pub imsg: ImsgClient,
    /// The account's attachment files: over its SSH connection, or in place for a local imsg.
    pub files: Files,
    rpc: RpcClient,
    peer: Peer,
}

impl OpenAccount {
    /// Resolve the account's transport, start `imsg rpc` and initialize it; a peer that does not
    /// initialize is stopped before the error is returned.
    pub async fn open(config: &Config, account: &Account) -> anyhow::Result<OpenAccount> {
        // A ResolveError stays the error's root, so the CLI exits 2 for it.
        let runtime = super::runtime_of(config, account)?;
        let options = ClientOptions {
            request_timeout: runtime.probe_timeout,
            ..ClientOptions::default()
        };
        let (rpc, peer) = transport::open(&runtime.plan, &runtime.id, options, &mut None).await?;
        // A process transport with `remoteHost` reads the Mac's files over SSH (docs/attachments.md).
        let remote_host = RemoteHost::of(account, &runtime.plan, &runtime.channel.state_dir);
        let files = Files::for_session(&peer, remote_host, runtime.media.sftp_timeout);
        match ImsgClient::initialize(rpc.clone(), runtime.probe_timeout).await {
            Ok(imsg) => Ok(OpenAccount {
                runtime,
                imsg,
                files,
                rpc,
                peer,
            }),
            Err(err) => {
                peer.stop(&rpc).await;
                Err(err.into())
            }
        }
    }

    /// Graceful stop: stdin EOF to imsg, wait for its exit, close the connection.
    pub async fn stop(self) {
        self.peer.stop(&self.rpc).await;
    }
}

/// Open the account, run `f` against it, and stop it whether `f` succeeded or not.
pub(super) async fn with_account<T>(
    config: &Config,
    account: &Account,
    f: impl AsyncFnOnce(&OpenAccount) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let open = OpenAccount::open(config, account).await?;
    let result = f(&open).await;
    open.stop().await;
    result
}
