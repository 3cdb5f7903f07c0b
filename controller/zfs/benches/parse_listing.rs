//! Parse benchmark: a generated 1,000,000-line `zfs list -H -p` snapshot listing (1,000
//! datasets x 1,000 snapshots, with one user property column), parsed
//!
//! - `parse-only`: [`ListParser::parse_line`] over lines already in memory (parser speed);
//! - `streaming`: the production path, `Zfs::list` with the local executor: a child
//!   process (a `zfs` shim that cats the listing) whose stdout pipe is parsed line by line
//!   as it arrives, keeping the parsed entries;
//! - `baseline`: the naive way, the whole output read into one String, then
//!   `split('\t')` into a `Vec<String>` per line, kept.
//!
//! Each variant runs in a fresh child process of this binary so its peak resident memory
//! (`VmHWM` from /proc/self/status) is its own. Run: `cargo bench -p tidepool-zfs`.
//! `PARSE_BENCH_LINES` changes the line count.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tidepool_api::names::DatasetName;
use tidepool_zfs::parse::ListParser;
use tidepool_zfs::{ListRequest, LocalExecutor, Zfs};

const DEFAULT_LINES: usize = 1_000_000;
const SNAPS_PER_DATASET: usize = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // cargo bench passes `--bench`; a child gets `--variant NAME FILE LINES`.
    if let Some(i) = args.iter().position(|a| a == "--variant") {
        let (Some(variant), Some(file)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("usage: --variant NAME FILE");
            std::process::exit(2);
        };
        run_variant(variant, Path::new(file));
        return;
    }
    let lines: usize = std::env::var("PARSE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LINES);
    let dir = std::env::temp_dir().join(format!("tidepool-parse-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let file = dir.join("listing.tsv");
    let bytes = match generate(&file, lines) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot write {}: {e}", file.display());
            std::process::exit(1);
        }
    };
    println!(
        "zfs list snapshot listing: {lines} lines, {:.1} MiB ({} columns incl. 1 user property)",
        bytes as f64 / (1 << 20) as f64,
        9
    );
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("current_exe: {e}");
            std::process::exit(1);
        }
    };
    let mut results = Vec::new();
    for variant in ["parse-only", "streaming", "baseline"] {
        match run_child(&exe, variant, &file) {
            Some(r) => results.push(r),
            None => std::process::exit(1),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!(
        "{:<12} {:>9} {:>9} {:>14} {:>14} {:>15} {:>13}",
        "variant",
        "wall s",
        "cpu s",
        "lines/wall-s",
        "lines/cpu-s",
        "peak RSS (MiB)",
        "result (MiB)"
    );
    for r in &results {
        println!(
            "{:<12} {:>9.3} {:>9.2} {:>14.0} {:>14.0} {:>15.1} {:>13}",
            r.variant,
            r.seconds,
            r.cpu,
            r.lines as f64 / r.seconds,
            r.lines as f64 / r.cpu.max(0.01),
            r.peak_kib as f64 / 1024.0,
            r.result_kib
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        );
    }
    let find = |v: &str| results.iter().find(|r| r.variant == v);
    if let (Some(s), Some(b)) = (find("streaming"), find("baseline")) {
        println!();
        println!(
            "streaming vs baseline: {:.2}x the speed (cpu time), {:.2}x less peak memory",
            b.cpu / s.cpu.max(0.01),
            b.peak_kib as f64 / s.peak_kib as f64
        );
        let target = 1_000_000.0;
        let rate = s.lines as f64 / s.cpu.max(0.01);
        println!(
            "target >= 1,000,000 lines/s (streaming, per cpu-second): {} ({rate:.0} lines/s)",
            if rate >= target { "met" } else { "NOT MET" }
        );
    }
}

struct Figures {
    variant: String,
    lines: usize,
    seconds: f64,
    cpu: f64,
    peak_kib: u64,
    result_kib: Option<u64>,
}

fn run_child(exe: &Path, variant: &str, file: &Path) -> Option<Figures> {
    let out = match Command::new(exe)
        .arg("--variant")
        .arg(variant)
        .arg(file)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{variant}: cannot run child: {e}");
            return None;
        }
    };
    if !out.status.success() {
        eprintln!(
            "{variant}: child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = Figures {
        variant: variant.to_owned(),
        lines: 0,
        seconds: 0.0,
        cpu: 0.0,
        peak_kib: 0,
        result_kib: None,
    };
    for kv in text.split_whitespace() {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "lines" => f.lines = v.parse().unwrap_or(0),
            "seconds" => f.seconds = v.parse().unwrap_or(0.0),
            "cpu" => f.cpu = v.parse().unwrap_or(0.0),
            "peak_kib" => f.peak_kib = v.parse().unwrap_or(0),
            "result_kib" => f.result_kib = v.parse().ok(),
            _ => {}
        }
    }
    Some(f)
}

fn generate(path: &PathBuf, lines: usize) -> std::io::Result<u64> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut line = String::with_capacity(256);
    let datasets = lines.div_ceil(SNAPS_PER_DATASET);
    let mut n = 0usize;
    'outer: for d in 0..datasets {
        for s in 0..SNAPS_PER_DATASET {
            if n == lines {
                break 'outer;
            }
            line.clear();
            use std::fmt::Write as _;
            let creation = 1_763_800_000u64 + (s as u64) * 3600;
            let _ = writeln!(
                line,
                "tank/k8s/pvc-{d:08x}-5c1e-4a7b-9d2f-{d:012x}@tidepool_2026{:04}T{:02}0000Z_hourly\tsnapshot\t{}\t{}\t{creation}\t{}\t{}\t-\tnamespace-{}/schedule-{}",
                s / 24 % 10000,
                s % 24,
                0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n as u64 + 1),
                1000 + n,
                (n % 977) * 4096,
                (n % 1013) * 8192,
                d % 50,
                d % 7,
            );
            w.write_all(line.as_bytes())?;
            written += line.len() as u64;
            n += 1;
        }
    }
    w.flush()?;
    Ok(written)
}

fn parser() -> ListParser {
    let prop = match "tidepool.dev:owner".parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    ListParser::new(vec![prop])
}

fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of this process, in seconds (clock ticks of 1/100 s). The
/// machines these benches run on are shared, so CPU time is the fair measure of the
/// parser; wall time is printed too.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn fail(msg: String) -> ! {
    eprintln!("{msg}");
    std::process::exit(1)
}

fn run_variant(variant: &str, file: &Path) {
    let before = rss_kib();
    let cpu_before = cpu_seconds();
    let (lines, seconds, kept, cpu) = match variant {
        "parse-only" => {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| fail(e.to_string()));
            let p = parser();
            let cpu_before = cpu_seconds();
            let start = Instant::now();
            let mut n = 0usize;
            let mut guid_sum = 0u64;
            for line in text.lines() {
                let e = p
                    .parse_line(line)
                    .unwrap_or_else(|r| fail(format!("line {}: {r}", n + 1)));
                guid_sum = guid_sum.wrapping_add(e.guid);
                n += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            std::hint::black_box(guid_sum);
            (n, secs, None, cpu_seconds() - cpu_before)
        }
        "streaming" => {
            // The production path end to end: `Zfs::list` spawns "zfs" with the local
            // executor (here a shim that cats the listing, so no ZFS is needed), reads its
            // stdout pipe line by line and keeps the parsed entries.
            let dir = file.parent().unwrap_or(Path::new("/tmp"));
            let shim = dir.join("zfs");
            let script = format!("#!/bin/sh\nexec cat '{}'\n", file.display());
            std::fs::write(&shim, script).unwrap_or_else(|e| fail(e.to_string()));
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| fail(e.to_string()));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| fail(e.to_string()));
            let zfs = Zfs::new(LocalExecutor::with_bin_dir(dir));
            let root: DatasetName = "tank".parse().unwrap_or_else(|e| fail(format!("{e}")));
            let req = ListRequest::inventory(root, parser().user_props().to_vec());
            let start = Instant::now();
            let inv = rt
                .block_on(zfs.list(&req))
                .unwrap_or_else(|e| fail(e.to_string()));
            let secs = start.elapsed().as_secs_f64();
            let n = inv.entries.len();
            let kept = rss_kib().saturating_sub(before);
            std::hint::black_box(&inv);
            (n, secs, Some(kept), cpu_seconds() - cpu_before)
        }
        "baseline" => {
            let start = Instant::now();
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| fail(e.to_string()));
            let rows: Vec<Vec<String>> = text
                .lines()
                .map(|l| l.split('\t').map(String::from).collect())
                .collect();
            let mut guid_sum = 0u64;
            for r in &rows {
                if r.len() != 9 {
                    fail(format!("bad row {r:?}"));
                }
                guid_sum = guid_sum.wrapping_add(r[2].parse::<u64>().unwrap_or(0));
            }
            let secs = start.elapsed().as_secs_f64();
            let kept = rss_kib().saturating_sub(before);
            std::hint::black_box(guid_sum);
            std::hint::black_box(&rows);
            (rows.len(), secs, Some(kept), cpu_seconds() - cpu_before)
        }
        other => fail(format!("unknown variant {other}")),
    };
    println!(
        "lines={lines} seconds={seconds} cpu={cpu} peak_kib={} {}",
        peak_kib(),
        kept.map(|k| format!("result_kib={k}")).unwrap_or_default()
    );
}
