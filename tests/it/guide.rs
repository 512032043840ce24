//! docs/guides/migrating-from-a-wrapper.md followed literally, as a new user would, against the
//! loopback sshd: its shell commands and its config block, with only the placeholders filled in.

use std::process::Command;

use crate::sshd::Sshd;
use crate::support::{Bridge, SimMac, imsg_bridge_bin, imsg_sim_bin};

/// The fenced blocks of a markdown file with the given info string, in order.
fn blocks(markdown: &str, info: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        let fence = line.trim_start();
        match &mut current {
            None if fence == format!("```{info}") => current = Some(Vec::new()),
            Some(lines) if fence.starts_with("```") => {
                out.push(lines.join("\n"));
                current = None;
            }
            Some(lines) => lines.push(line),
            None => {}
        }
    }
    out
}

#[test]
fn the_migration_guide_works_when_followed_literally() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/guides/migrating-from-a-wrapper.md"
    ))
    .expect("the migration guide exists");
    let sshd = Sshd::start();
    let mac = SimMac::new();
    // The user's existing wrapper: their imsg (here imsg-sim, installed as `imsg`) on "the Mac".
    let bin = mac.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(imsg_sim_bin(), bin.join("imsg")).unwrap();
    let wrapper = mac.dir.path().join("imsg-ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ssh -T -i {key} -p {port} -o UserKnownHostsFile={kh} {user}@127.0.0.1 {imsg} \"$@\"\n",
            key = sshd.client_key.display(),
            port = sshd.port,
            kh = sshd.known_hosts.display(),
            user = sshd.user,
            imsg = bin.join("imsg").display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The guide's config block, placeholders filled; the user's other keys (dbPath, state dir,
    // access) stay as they were.
    let config_block = blocks(&guide, "json5")
        .into_iter()
        .find(|b| b.contains("<WRAPPER>"))
        .expect("a json5 config block with <WRAPPER>");
    let config = mac.dir.path().join("config.json5");
    let mut value: serde_json::Value =
        json5::from_str(&config_block.replace("<WRAPPER>", wrapper.to_str().unwrap())).unwrap();
    let imessage = value["channels"]["imessage"].as_object_mut().unwrap();
    imessage.insert("dbPath".into(), mac.db.display().to_string().into());
    imessage.insert("dmPolicy".into(), "open".into());
    imessage.insert("allowFrom".into(), serde_json::json!(["*"]));
    value["bridge"] = serde_json::json!({"stateDir": mac.state_dir().display().to_string()});
    std::fs::write(&config, value.to_string()).unwrap();

    let commands: Vec<String> = blocks(&guide, "sh")
        .into_iter()
        .map(|b| b.trim().to_string())
        .filter(|b| b.starts_with("imsg-bridge") && (b.contains("<WRAPPER>") || b.contains("<CONFIG>")))
        .collect();
    let fill = |command: &str| -> Vec<String> {
        command
            .replace("<WRAPPER>", wrapper.to_str().unwrap())
            .replace("<CONFIG>", config.to_str().unwrap())
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    let detect = commands
        .iter()
        .find(|c| c.contains(" detect "))
        .expect("step 1: detect");
    let out = Command::new(imsg_bridge_bin())
        .args(fill(detect))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "detect says transparent: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let chats = commands
        .iter()
        .find(|c| c.contains(" chats"))
        .expect("step 3: chats");
    let out = Command::new(imsg_bridge_bin())
        .args(fill(chats))
        .env_remove("IMSG_BRIDGE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("transport auto: replacing the transparent wrapper with a native SSH connection"),
        "{stderr}"
    );
    assert!(stderr.contains("host_key=SHA256:"), "{stderr}");
    let run = commands
        .iter()
        .find(|c| c.ends_with(" run"))
        .expect("step 4: run");
    let args = fill(run);
    let config_at = args.iter().position(|a| a == "--config").unwrap() + 1;
    let rest: Vec<&str> = args[config_at + 1..].iter().map(String::as_str).collect();
    let bridge = Bridge::start(std::path::Path::new(&args[config_at]), &rest);
    bridge.wait_for_log("watching for messages");
    mac.inject("+14155551212", "migrated");
    bridge.wait_for_lines(1);
    let (_, lines) = bridge.stop(15);
    assert!(lines[0].contains("\"text\":\"migrated\""), "{lines:?}");
}
