//! `disk`, `memory`, `load`: the machine Steward runs on (Linux).
//!
//! - `disk` (setting `path`, default `/`): `disk_used_percent` (as `df` counts it: used over
//!   used + available to ordinary users), `disk_free_bytes` (available to ordinary users),
//!   `disk_total_bytes`, `inodes_used_percent`, from statvfs(2).
//! - `memory` (no settings): from /proc/meminfo, `memory_used_percent` (100 × (total −
//!   MemAvailable) / total), `memory_available_bytes`, `memory_total_bytes`,
//!   `swap_used_percent` (0 without swap), and `memory_pressure_some_avg10` (the share of the
//!   last 10 s in which some task stalled on memory, 0-100) where /proc/pressure/memory exists.
//! - `load` (no settings): from /proc/loadavg, `load1`, `load5`, `load15`, `cpus` (the CPUs
//!   this process may use) and `load_per_cpu` (load1 / cpus).
//!
//! Each reports `response_time` too.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use crate::{
    support::{failed, finish, no_answer, static_kind, Settings},
    Facts, Outcome, Probe, ProbeConfigError, SecretSource, Value,
};

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[
    (
        "disk",
        "space and inodes used on the file system holding a path",
    ),
    ("memory", "memory and swap use, memory pressure"),
    ("load", "load averages, per CPU"),
];

const DISK_FACTS: &[&str] = &[
    "disk_used_percent",
    "disk_free_bytes",
    "disk_total_bytes",
    "inodes_used_percent",
    "response_time",
];

const MEMORY_FACTS: &[&str] = &[
    "memory_used_percent",
    "memory_available_bytes",
    "memory_total_bytes",
    "swap_used_percent",
    "memory_pressure_some_avg10",
    "response_time",
];

const LOAD_FACTS: &[&str] = &[
    "load1",
    "load5",
    "load15",
    "cpus",
    "load_per_cpu",
    "response_time",
];

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    let kind = static_kind(kind, KINDS)?;
    let mut s = Settings::new("", kind, settings)?;
    let probe: Arc<dyn Probe> = match kind {
        "disk" => {
            let path = s.opt_str("path")?.unwrap_or_else(|| "/".into());
            Arc::new(Disk {
                path: PathBuf::from(path),
            })
        }
        "memory" => Arc::new(Memory {
            meminfo: PathBuf::from("/proc/meminfo"),
            pressure: PathBuf::from("/proc/pressure/memory"),
        }),
        _ => Arc::new(Load {
            loadavg: PathBuf::from("/proc/loadavg"),
        }),
    };
    s.finish()?;
    Ok(probe)
}

/// Runs blocking reads on the blocking pool within `timeout` (a hung NFS mount must not hang
/// the check).
async fn blocking<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("the reading task failed: {e}")),
        Err(_) => Err(no_answer(timeout)),
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

fn to_u64<T: TryInto<u64>>(v: T) -> u64 {
    v.try_into().unwrap_or(u64::MAX)
}

struct Disk {
    path: PathBuf,
}

#[async_trait]
impl Probe for Disk {
    fn kind(&self) -> &'static str {
        "disk"
    }

    fn default_condition(&self) -> &'static str {
        "disk_used_percent < 90"
    }

    fn facts(&self) -> &'static [&'static str] {
        DISK_FACTS
    }

    async fn run(&self, _secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let path = self.path.clone();
        let stat = blocking(timeout, move || {
            nix::sys::statvfs::statvfs(&path).map_err(|e| {
                format!(
                    "cannot read the file system of {}: {}; check that the path exists and Steward may read it",
                    path.display(),
                    e.desc()
                )
            })
        })
        .await;
        let stat = match stat {
            Ok(s) => s,
            Err(e) => return failed(start, Facts::new(), e),
        };
        let frsize = to_u64(stat.fragment_size());
        let blocks = to_u64(stat.blocks());
        let free = to_u64(stat.blocks_free());
        let avail = to_u64(stat.blocks_available());
        let used = blocks.saturating_sub(free);
        let files = to_u64(stat.files());
        let files_free = to_u64(stat.files_free());
        let mut facts = Facts::new();
        facts.insert(
            "disk_used_percent",
            Value::Number(percent(used as f64, used as f64 + avail as f64)),
        );
        facts.insert(
            "disk_free_bytes",
            Value::Number(avail as f64 * frsize as f64),
        );
        facts.insert(
            "disk_total_bytes",
            Value::Number(blocks as f64 * frsize as f64),
        );
        facts.insert(
            "inodes_used_percent",
            Value::Number(percent(
                files.saturating_sub(files_free) as f64,
                files as f64,
            )),
        );
        finish(start, facts, Vec::new(), None)
    }
}

struct Memory {
    meminfo: PathBuf,
    pressure: PathBuf,
}

/// The kB figures of /proc/meminfo that `memory` reads.
#[derive(Debug, Default, PartialEq)]
struct MemInfo {
    total: u64,
    available: u64,
    swap_total: u64,
    swap_free: u64,
}

fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
    let mut info = MemInfo::default();
    let (mut have_total, mut have_available) = (false, false);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok());
        let Some(kb) = value else { continue };
        let bytes = kb.saturating_mul(1024);
        match key.trim() {
            "MemTotal" => {
                info.total = bytes;
                have_total = true;
            }
            "MemAvailable" => {
                info.available = bytes;
                have_available = true;
            }
            "SwapTotal" => info.swap_total = bytes,
            "SwapFree" => info.swap_free = bytes,
            _ => {}
        }
    }
    if !have_total || !have_available || info.total == 0 {
        return Err(
            "/proc/meminfo has no MemTotal or MemAvailable (Linux 3.14 or later is needed)".into(),
        );
    }
    Ok(info)
}

/// `avg10` of the `some` line of /proc/pressure/memory.
fn parse_pressure_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("avg10="))
        .and_then(|v| v.parse::<f64>().ok())
}

#[async_trait]
impl Probe for Memory {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn default_condition(&self) -> &'static str {
        "memory_used_percent < 90"
    }

    fn facts(&self) -> &'static [&'static str] {
        MEMORY_FACTS
    }

    async fn run(&self, _secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let (meminfo, pressure) = (self.meminfo.clone(), self.pressure.clone());
        let read = blocking(timeout, move || {
            let text = std::fs::read_to_string(&meminfo)
                .map_err(|e| format!("cannot read {}: {e}", meminfo.display()))?;
            let info = parse_meminfo(&text)?;
            // Absent before Linux 4.20 or without CONFIG_PSI: then the fact is left out.
            let psi = std::fs::read_to_string(&pressure)
                .ok()
                .and_then(|t| parse_pressure_some_avg10(&t));
            Ok((info, psi))
        })
        .await;
        let (info, psi) = match read {
            Ok(r) => r,
            Err(e) => return failed(start, Facts::new(), e),
        };
        let mut facts = Facts::new();
        facts.insert(
            "memory_used_percent",
            Value::Number(percent(
                info.total.saturating_sub(info.available) as f64,
                info.total as f64,
            )),
        );
        facts.insert(
            "memory_available_bytes",
            Value::Number(info.available as f64),
        );
        facts.insert("memory_total_bytes", Value::Number(info.total as f64));
        facts.insert(
            "swap_used_percent",
            Value::Number(percent(
                info.swap_total.saturating_sub(info.swap_free) as f64,
                info.swap_total as f64,
            )),
        );
        if let Some(p) = psi {
            facts.insert("memory_pressure_some_avg10", Value::Number(p));
        }
        finish(start, facts, Vec::new(), None)
    }
}

struct Load {
    loadavg: PathBuf,
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[async_trait]
impl Probe for Load {
    fn kind(&self) -> &'static str {
        "load"
    }

    fn default_condition(&self) -> &'static str {
        "load_per_cpu < 2"
    }

    fn facts(&self) -> &'static [&'static str] {
        LOAD_FACTS
    }

    async fn run(&self, _secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let path = self.loadavg.clone();
        let read = blocking(timeout, move || {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            parse_loadavg(&text).ok_or_else(|| {
                format!("{} does not start with three load averages", path.display())
            })
        })
        .await;
        let [load1, load5, load15] = match read {
            Ok(l) => l,
            Err(e) => return failed(start, Facts::new(), e),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut facts = Facts::new();
        facts.insert("load1", Value::Number(load1));
        facts.insert("load5", Value::Number(load5));
        facts.insert("load15", Value::Number(load15));
        facts.insert("cpus", Value::Number(cpus as f64));
        facts.insert("load_per_cpu", Value::Number(load1 / cpus as f64));
        finish(start, facts, Vec::new(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let m = parse_meminfo(
            "MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:    250 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        )
        .unwrap();
        assert_eq!(
            m,
            MemInfo {
                total: 1_024_000,
                available: 256_000,
                swap_total: 0,
                swap_free: 0
            }
        );
        assert!(parse_meminfo("MemTotal: 5 kB\n").is_err());
        assert!(parse_meminfo("garbage").is_err());
        assert_eq!(
            parse_pressure_some_avg10(
                "some avg10=1.50 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            ),
            Some(1.5)
        );
        assert_eq!(parse_pressure_some_avg10(""), None);
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/1234 5678\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.5 x"), None);
        assert_eq!(percent(1.0, 0.0), 0.0);
    }

    #[test]
    fn settings() {
        assert!(build("memory", &serde_json::json!({})).is_ok());
        let e = build("memory", &serde_json::json!({"path": "/"}))
            .err()
            .unwrap();
        assert!(e.message.contains("it takes no settings"), "{e}");
        assert!(build("disk", &serde_json::json!({"path": "/tmp"})).is_ok());
        assert!(build("load", &serde_json::Value::Null).is_ok());
    }
}
