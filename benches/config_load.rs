//! Loading and compiling a large config: 10,000 users and 1,000 metaflows (each with numbers
//! and patterns; every user has its own user-level metaflow, merged over its account's).
//!
//! Run: `cargo bench --bench config_load`. Results and method: docs/BENCHMARKS.md.

use std::fmt::Write;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

const ACCOUNTS: usize = 10;
const USERS_PER_ACCOUNT: usize = 1_000;
const METAFLOWS: usize = 1_000;

/// Writes the config and metaflows into `dir`; returns the config path.
fn write_large_config(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("metaflows")).unwrap();
    for m in 0..METAFLOWS {
        let mut y = String::from("digit_timeout: 2000\nnumbers:\n");
        for n in 0..4 {
            writeln!(
                y,
                "  '{}{}': {{module: {}}}",
                n,
                m % 10,
                ["hangup", "resume", "hold", "record"][n]
            )
            .unwrap();
        }
        y.push_str("patterns:\n");
        for p in 0..6 {
            writeln!(
                y,
                "  '{}{:03}(\\d{{{}}})': {{module: transfer, data: {{type: blind}}}}",
                5 + p % 4,
                m,
                2 + p
            )
            .unwrap();
        }
        std::fs::write(dir.join("metaflows").join(format!("flow{m}.yaml")), y).unwrap();
    }
    std::fs::write(
        dir.join("metaflows/account.yaml"),
        "numbers:\n  '7': {module: resume}\npatterns:\n  '2(\\d{4})': {module: transfer, data: {takeback_dtmf: '*1'}}\n",
    )
    .unwrap();
    let mut c = String::from("accounts:\n");
    for a in 0..ACCOUNTS {
        writeln!(
            c,
            "  acct{a}:\n    domain: acct{a}.test\n    metaflow: account\n    users:"
        )
        .unwrap();
        for u in 0..USERS_PER_ACCOUNT {
            let ext = 10_000 + u;
            writeln!(
                c,
                "      - extension: \"{ext}\"\n        password: pw{a}x{u}\n        metaflow: flow{}",
                (a * USERS_PER_ACCOUNT + u) % METAFLOWS
            )
            .unwrap();
        }
    }
    let path = dir.join("config.yaml");
    std::fs::write(&path, c).unwrap();
    path
}

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_large_config(dir.path());
    let (config, report) = hookflash::config::load(&path);
    let config = config
        .unwrap_or_else(|| panic!("{:?}", report.rendered().iter().take(5).collect::<Vec<_>>()));
    println!("loaded: {}", config.summary());
    let mut group = c.benchmark_group("config_load");
    group.sample_size(10);
    group.bench_function("10k_users_1k_metaflows", |b| {
        b.iter(|| {
            let (config, _) = hookflash::config::load(&path);
            assert!(config.is_some());
        })
    });
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
