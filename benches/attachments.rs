//! Attachment pulls: the bridge's staging (SFTP on the open session, sha256, fsync, rename) against
//! what users run today, one `scp` per file. Small files (50 × 100 KB) and one bulk file (256 MB).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imsg_bridge::imsg::{Attachment, Message};
use imsg_bridge::media::{Files, RemoteFiles, Stager};
use imsg_bridge::transport::ssh;

use crate::remote::{scp, write_random};
use crate::report::{Comparison, Samples};
use crate::sshd::Sshd;

pub fn run(runtime: &tokio::runtime::Runtime, work: &Path) -> Vec<Comparison> {
    let smoke = crate::rounds(2) == 1;
    let (small_count, bulk_mb) = if smoke { (5, 16) } else { (50, 256) };
    let sshd = Sshd::start();
    let remote = work.join("mac");
    std::fs::create_dir_all(&remote).unwrap();
    let small: Vec<PathBuf> = (0..small_count)
        .map(|i| {
            let path = remote.join(format!("small-{i:02}.jpg"));
            write_random(&path, 100 * 1024, i as u64);
            path
        })
        .collect();
    let bulk = remote.join("bulk.mov");
    write_random(&bulk, bulk_mb * 1024 * 1024, 99);

    let connection = Arc::new(runtime.block_on(ssh::connect(&sshd.target())).unwrap());
    let files = Files::Remote(Arc::new(RemoteFiles::new(
        imsg_bridge::transport::link::Link::Direct(connection),
        Duration::from_secs(120),
    )));
    let stager = |dir: PathBuf| Stager {
        dir,
        roots: vec![remote.display().to_string()],
        max_bytes: u64::MAX,
        retries: 0,
        files: files.clone(),
    };
    // Warm the SFTP session: the bridge keeps one open per connection.
    runtime
        .block_on(files.probe(&small[0].display().to_string()))
        .unwrap();

    let mut rows = Vec::new();
    let mut ours = Samples::new("sftp on the open session");
    let mut baseline = Samples::new("one scp per file");
    for round in 0..crate::rounds(3) {
        let out = work.join(format!("ours-small-{round}"));
        let message = message_with(&small);
        let started = Instant::now();
        let staged = runtime.block_on(stager(out.clone()).stage(&message));
        ours.durations.push(started.elapsed());
        assert!(staged.iter().all(|m| m.path.is_some()), "{staged:?}");
        let _ = std::fs::remove_dir_all(&out);

        let out = work.join(format!("scp-small-{round}"));
        std::fs::create_dir_all(&out).unwrap();
        let started = Instant::now();
        for file in &small {
            scp(&sshd, file, &out);
        }
        baseline.durations.push(started.elapsed());
        let _ = std::fs::remove_dir_all(&out);
    }
    rows.push(Comparison::new(
        &format!("{small_count} × 100 KB attachments"),
        ours,
        baseline,
    ));

    let mut ours = Samples::new("sftp (+sha256, fsync)");
    let mut baseline = Samples::new("scp");
    for round in 0..crate::rounds(3) {
        let out = work.join(format!("ours-bulk-{round}"));
        let message = message_with(std::slice::from_ref(&bulk));
        let started = Instant::now();
        let staged = runtime.block_on(stager(out.clone()).stage(&message));
        ours.durations.push(started.elapsed());
        assert!(staged[0].path.is_some(), "{staged:?}");
        let _ = std::fs::remove_dir_all(&out);

        let out = work.join(format!("scp-bulk-{round}"));
        std::fs::create_dir_all(&out).unwrap();
        let started = Instant::now();
        scp(&sshd, &bulk, &out);
        baseline.durations.push(started.elapsed());
        let _ = std::fs::remove_dir_all(&out);
    }
    let bulk_bytes = (bulk_mb * 1024 * 1024) as f64;
    let mib_s = |s: &Samples| bulk_bytes / (1024.0 * 1024.0) / (s.quantile_ms(0.5) / 1000.0);
    println!(
        "bulk {bulk_mb} MB: ours {:.0} MiB/s, scp {:.0} MiB/s (medians)",
        mib_s(&ours),
        mib_s(&baseline)
    );
    rows.push(Comparison::new(
        &format!("{bulk_mb} MB attachment"),
        ours,
        baseline,
    ));
    rows
}

fn message_with(paths: &[PathBuf]) -> Message {
    Message {
        id: 1,
        guid: "bench".into(),
        created_at: "2020-01-01T00:00:00Z".into(),
        attachments: paths
            .iter()
            .map(|p| Attachment {
                original_path: p.display().to_string(),
                transfer_name: p.file_name().unwrap().to_string_lossy().into_owned(),
                ..Attachment::default()
            })
            .collect(),
        ..Message::default()
    }
}
