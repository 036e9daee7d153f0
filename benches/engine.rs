//! Per-key cost of the key engine with a 1,000-pattern metaflow, side by side with the naive
//! approach (a `RegexSet` over the collected string after every key, as an engine without an
//! automaton must do to know whether to wait). Also prints the collector's state size.
//!
//! Run: `cargo bench --bench engine`. Results and method: docs/BENCHMARKS.md.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hookflash::config::load_metaflow_text;
use hookflash::engine::collector::{Collector, Side};
use hookflash::engine::metaflow::Metaflow;
use hookflash::keys::{Key, parse_keys};

/// 1,000 distinct, non-overlapping patterns of the kinds feature codes use: a fixed prefix,
/// then captured digits of fixed or open length, some with alternation.
pub fn thousand_patterns() -> Vec<String> {
    (0..1000)
        .map(|i| {
            let prefix = 1000 + i;
            match i % 4 {
                0 => format!("{prefix}(\\d{{4}})"),
                1 => format!("{prefix}(\\d{{2,6}})"),
                2 => format!("{prefix}\\*(\\d+)"),
                _ => format!("(?:{prefix}|{})(\\d{{3}})", 5000 + i),
            }
        })
        .collect()
}

fn metaflow_yaml(patterns: &[String]) -> String {
    let mut yaml = String::from("binding_digit: '*'\ndigit_timeout: 2000\npatterns:\n");
    for p in patterns {
        yaml.push_str(&format!("  '{p}': {{module: transfer}}\n"));
    }
    yaml
}

fn big_flow() -> Arc<Metaflow> {
    let (flow, report) = load_metaflow_text(
        Path::new("bench.yaml"),
        &metaflow_yaml(&thousand_patterns()),
    );
    flow.unwrap_or_else(|| panic!("{:?}", report.rendered()))
}

fn engine(c: &mut Criterion) {
    let flow = big_flow();
    println!(
        "metaflow: {} patterns, {} automaton states, {} KiB of tables; collector state: {} bytes \
         (size_of, no heap)",
        flow.entries.len(),
        flow.matcher.state_count(),
        flow.matcher.table_bytes() / 1024,
        std::mem::size_of::<Collector>()
    );
    // `*` + 9 keys that stay collectable to the end ("1001" + "\d{2,6}" open): a step per key.
    let keys: Vec<Key> = parse_keys("*10014567").unwrap();
    let mut group = c.benchmark_group("per_key");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("hookflash_collector_1000_patterns", |b| {
        let mut out = Vec::with_capacity(8);
        b.iter_batched_ref(
            || Collector::new(Arc::clone(&flow), Side::Own),
            |collector| {
                for (i, &k) in keys.iter().enumerate() {
                    black_box(collector.on_key(k, i as u64 * 100, &mut out));
                }
                out.clear();
            },
            BatchSize::SmallInput,
        )
    });
    let set = regex::RegexSetBuilder::new(thousand_patterns().iter().map(|p| format!("^(?:{p})$")))
        .size_limit(1 << 30)
        .dfa_size_limit(1 << 30)
        .build()
        .unwrap();
    group.bench_function("naive_regexset_rescan_1000_patterns", |b| {
        b.iter(|| {
            let mut collected = String::new();
            for &k in &keys[1..] {
                collected.push(k.as_char());
                black_box(set.matches(&collected).iter().next());
            }
        })
    });
    group.finish();

    let fire = parse_keys("*10002600").unwrap();
    c.bench_function("fire_with_captures_1000_patterns", |b| {
        let mut out = Vec::with_capacity(8);
        b.iter_batched_ref(
            || Collector::new(Arc::clone(&flow), Side::Own),
            |collector| {
                for (i, &k) in fire.iter().enumerate() {
                    collector.on_key(k, i as u64 * 100, &mut out);
                }
                assert_eq!(out.len(), 1);
                out.clear();
            },
            BatchSize::SmallInput,
        )
    });
}

fn compile(c: &mut Criterion) {
    let yaml = metaflow_yaml(&thousand_patterns());
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("metaflow_1000_patterns", |b| {
        b.iter(|| {
            assert!(
                load_metaflow_text(Path::new("bench.yaml"), &yaml)
                    .0
                    .is_some()
            )
        })
    });
    group.finish();
}

criterion_group!(benches, engine, compile);
criterion_main!(benches);
