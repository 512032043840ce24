//! Result table and JSON file of `cargo bench`: every measurement side by side with its OpenSSH
//! baseline, printed and written to `target/bench/results.json`.

use std::time::Duration;

/// Samples of one measured thing.
pub struct Samples {
    pub name: String,
    pub durations: Vec<Duration>,
}

impl Samples {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            durations: Vec::new(),
        }
    }

    /// The q-quantile (nearest rank) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut sorted = self.durations.clone();
        sorted.sort();
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1].as_secs_f64() * 1000.0
    }
}

/// One comparison row: ours against the baseline, lower is better.
pub struct Comparison {
    pub bench: String,
    pub ours: Samples,
    pub baseline: Samples,
    /// What the table's time columns do not show (a throughput, counted log lines), printed under
    /// the table and written beside the row in the JSON file.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Comparison {
    pub fn new(bench: &str, ours: Samples, baseline: Samples) -> Self {
        Self {
            bench: bench.to_string(),
            ours,
            baseline,
            extra: serde_json::Map::new(),
        }
    }

    /// How many times faster ours is at the median (baseline / ours).
    pub fn speedup(&self) -> f64 {
        self.baseline.quantile_ms(0.5) / self.ours.quantile_ms(0.5)
    }
}

pub fn print_table(rows: &[Comparison]) {
    println!(
        "{:<28} {:<26} {:>9} {:>9} {:>9}   {:<26} {:>9} {:>9} {:>9}   {:>7}",
        "benchmark",
        "ours",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "baseline",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "speedup"
    );
    for row in rows {
        println!(
            "{:<28} {:<26} {:>9.1} {:>9.1} {:>9.1}   {:<26} {:>9.1} {:>9.1} {:>9.1}   {:>6.2}x",
            row.bench,
            row.ours.name,
            row.ours.quantile_ms(0.5),
            row.ours.quantile_ms(0.9),
            row.ours.quantile_ms(0.99),
            row.baseline.name,
            row.baseline.quantile_ms(0.5),
            row.baseline.quantile_ms(0.9),
            row.baseline.quantile_ms(0.99),
            row.speedup()
        );
    }
    for row in rows.iter().filter(|r| !r.extra.is_empty()) {
        let extra: Vec<String> = row.extra.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  {}: {}", row.bench, extra.join(", "));
    }
}

pub fn write_json(rows: &[Comparison], path: &std::path::Path) -> std::io::Result<()> {
    let side = |s: &Samples| {
        serde_json::json!({
            "name": s.name,
            "samples": s.durations.len(),
            "p50_ms": s.quantile_ms(0.5),
            "p90_ms": s.quantile_ms(0.9),
            "p99_ms": s.quantile_ms(0.99),
        })
    };
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "bench": r.bench,
                "ours": side(&r.ours),
                "baseline": side(&r.baseline),
                "speedup": r.speedup(),
                "extra": r.extra,
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({ "results": rows }))?;
    std::fs::write(path, text + "\n")
}
