//! Time from start to the first answered RPC: the native SSH transport against the same target
//! reached through an `exec ssh … imsg "$@"` wrapper run as a process (what users run today). Both
//! go through the bridge's own open → initialize → chats.list path; only the transport differs.

use std::path::Path;
use std::time::{Duration, Instant};

use imsg_bridge::imsg::ImsgClient;
use imsg_bridge::rpc::ClientOptions;
use imsg_bridge::transport::{self, resolve};

use crate::report::{Comparison, Samples};
use crate::sshd::Sshd;

const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(runtime: &tokio::runtime::Runtime, work: &Path) -> Comparison {
    let sshd = Sshd::start();
    let db = work.join("chat.db");
    crate::sim(&["init", "--db", &db.display().to_string()]);
    crate::sim(&[
        "inject",
        "--db",
        &db.display().to_string(),
        "--from",
        "+14155551212",
        "--text",
        "hi",
    ]);
    let sim = env!("CARGO_BIN_EXE_imsg-sim");
    let native = format!(
        "{{channels:{{imessage:{{dbPath:{db:?}, ssh:{{host:'127.0.0.1', port:{port}, user:{user:?}, identityFile:{key:?}, knownHostsFile:{kh:?}, remoteCliPath:{sim:?}, useAgent:false, strictHostKeyChecking:'yes'}}}}}}}}",
        db = db.display().to_string(),
        port = sshd.port,
        user = sshd.user,
        key = sshd.client_key.display().to_string(),
        kh = sshd.known_hosts.display().to_string(),
    );
    let wrapper = work.join("imsg-ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ssh -T -o BatchMode=yes -p {port} -i {key} -o UserKnownHostsFile={kh} {user}@127.0.0.1 {sim} \"$@\"\n",
            port = sshd.port,
            key = sshd.client_key.display(),
            kh = sshd.known_hosts.display(),
            user = sshd.user,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let process = format!(
        "{{channels:{{imessage:{{transport:'process', cliPath:{cli:?}, dbPath:{db:?}}}}}}}",
        cli = wrapper.display().to_string(),
        db = db.display().to_string(),
    );

    let mut ours = Samples::new("native ssh (russh)");
    let mut baseline = Samples::new("exec ssh wrapper process");
    // Interleaved, so drift on the machine hits both sides alike; one warm-up round each.
    for round in 0..=crate::rounds(20) {
        let a = runtime.block_on(first_answer(&native));
        let b = runtime.block_on(first_answer(&process));
        if round > 0 {
            ours.durations.push(a);
            baseline.durations.push(b);
        }
    }
    Comparison::new("start → first RPC answer", ours, baseline)
}

async fn first_answer(config_text: &str) -> Duration {
    let config = imsg_bridge::config::from_str(config_text, None).unwrap();
    let account = &config.accounts[0];
    let started = Instant::now();
    let plan = resolve::plan(account).unwrap();
    let options = ClientOptions {
        request_timeout: TIMEOUT,
        ..ClientOptions::default()
    };
    let (rpc, peer) = transport::open(&plan, &account.id, options, &mut None)
        .await
        .unwrap();
    let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
    let chats = imsg.chats_list(1).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(chats.len(), 1, "the benchmark must see the injected chat");
    peer.stop(&rpc).await;
    elapsed
}
