//! `imsg-bridge demo` as a user runs it: one process, nothing installed, exit 0, and a timeline
//! showing pairing, the reply, the held group message and the SFTP-pulled photo.

use serde_json::Value;

use crate::support::imsg_bridge_bin;

#[test]
fn the_demo_plays_the_whole_story_and_exits_0() {
    let out = std::process::Command::new(imsg_bridge_bin())
        .arg("demo")
        .env_remove("IMSG_BRIDGE_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("connected over native SSH (host key SHA256:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pairing code ") && stdout.contains("Approved imessage sender +14155550199."),
        "{stdout}"
    );
    assert!(
        stdout.contains("bot → +14155550199: echo: hello again"),
        "{stdout}"
    );
    assert!(
        stdout.contains("held history: jane@example.com: dinner at 7?"),
        "{stdout}"
    );
    // The photo: the source's sha256 as printed before sending equals the staged file's in the envelope.
    let source = stdout
        .lines()
        .find_map(|l| l.split("[sunset.jpg, sha256 ").nth(1))
        .and_then(|rest| rest.strip_suffix(']'))
        .expect("the source sha256 is printed");
    let envelopes: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(envelopes.len(), 3, "{stdout}");
    let media = &envelopes[2]["media"][0];
    assert_eq!(media["status"], "ok");
    assert_eq!(media["sha256"], source, "{stdout}");
    assert_eq!(envelopes[1]["history"][0]["body"], "dinner at 7?");
}
