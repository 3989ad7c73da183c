//! Throughput check: backs up generated data with Steward and (if installed) with
//! restic, and restores it with Steward.
//!
//! ```text
//! cargo run --release -p steward-repo --example bench -- [MiB] [zstd level]
//! ```
//!
//! The data is 40% random (incompressible) and 60% text-like, in files of 1 KiB to
//! 32 MiB. Everything is in the page cache, so this measures CPU, not disks.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use steward_repo::{
    backup, restore, BackupOptions, InitOptions, LocalBackend, RepoOptions, Repository,
    RestoreOptions,
};
use steward_test_utils::fs_tree::{random_bytes, text_bytes};

fn generate(dir: &Path, total: usize) -> usize {
    let mut written = 0;
    let mut i = 0u64;
    while written < total {
        let sub = dir.join(format!("d{}", i % 7));
        fs::create_dir_all(&sub).unwrap();
        let size = match i % 5 {
            0 => 32 << 20,
            1 => 8 << 20,
            2 => 1 << 10,
            3 => 300 << 10,
            _ => 16 << 20,
        }
        .min(total - written);
        let data = if matches!(i % 10, 1 | 4 | 6) {
            random_bytes(size, i)
        } else {
            text_bytes(size, i)
        };
        fs::write(sub.join(format!("f{i}.dat")), &data).unwrap();
        written += size;
        i += 1;
    }
    written
}

/// CPU seconds (user + system) used by this process so far.
fn cpu_secs() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn mib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn du(p: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let level: i32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let tmp = tempfile::tempdir().unwrap();
    // BENCH_SRC=dir reuses generated data (to profile the backup alone).
    let (src, total) = match std::env::var_os("BENCH_SRC") {
        Some(d) => {
            let d = std::path::PathBuf::from(d);
            if !d.exists() {
                generate(&d, mib << 20);
            }
            let n = du(&d) as usize;
            (d, n)
        }
        None => {
            let d = tmp.path().join("src");
            let n = generate(&d, mib << 20);
            (d, n)
        }
    };
    println!("generated {} MiB in {}", total >> 20, src.display());
    // Flush the generated files so their write-back does not compete with the backup.
    let _ = Command::new("sync").status();
    let only_steward = args.get(3).map(|a| a == "steward-only").unwrap_or(false);

    let repo_dir = tmp.path().join("steward");
    let repo = Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        "pw",
        InitOptions {
            options: RepoOptions {
                compression_level: level,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let t = Instant::now();
    let cpu = cpu_secs();
    let s = backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "steward backup (zstd {level}): {:.2}s ({:.2}s CPU), {:.0} MiB/s, repository {} MiB",
        secs,
        cpu_secs() - cpu,
        mib_s(total, secs),
        du(&repo_dir) >> 20
    );
    let t = Instant::now();
    let s2 = backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    println!(
        "steward backup, unchanged: {:.2}s ({} files reused)",
        t.elapsed().as_secs_f64(),
        s2.files_unchanged
    );
    let (_, sn) = repo.load_snapshot(&s.snapshot_id.to_hex()).unwrap();
    let out = tmp.path().join("restored");
    let _ = Command::new("sync").status();
    let t = Instant::now();
    restore(&repo, &sn, &out, &RestoreOptions::default()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "steward restore: {:.2}s, {:.0} MiB/s",
        secs,
        mib_s(total, secs)
    );
    fs::remove_dir_all(&out).unwrap();

    if !only_steward && Path::new("/usr/bin/restic").exists() {
        let pw = tmp.path().join("pw");
        fs::write(&pw, "pw").unwrap();
        let rdir = tmp.path().join("restic");
        let restic = |args: &[&str]| {
            let o = Command::new("/usr/bin/restic")
                .arg("-r")
                .arg(&rdir)
                .arg("--password-file")
                .arg(&pw)
                .arg("--no-cache")
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        restic(&["init", "--repository-version", "2"]);
        let _ = Command::new("sync").status();
        let t = Instant::now();
        restic(&["backup", "-q", src.to_str().unwrap()]);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "restic 0.14 backup (zstd auto): {:.2}s, {:.0} MiB/s, repository {} MiB",
            secs,
            mib_s(total, secs),
            du(&rdir) >> 20
        );
        let t = Instant::now();
        restic(&["backup", "-q", src.to_str().unwrap()]);
        println!(
            "restic backup, unchanged: {:.2}s",
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        restic(&["restore", "latest", "--target", out.to_str().unwrap()]);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "restic restore: {:.2}s, {:.0} MiB/s",
            secs,
            mib_s(total, secs)
        );
    }
}
