//! `retryd stats`: how the jobs of a window went, against the 80 % line.

use crate::cli::StatsArgs;
use crate::client::Client;
use crate::output::{self, bold, dim, table};
use anyhow::Result;
use serde_json::Value;

fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| dim("–"), |rate| format!("{:.1} %", rate * 100.0))
}

fn breakdown(title: &str, label: &str, rows: &Value) {
    let Some(rows) = rows.as_array().filter(|r| !r.is_empty()) else {
        return;
    };
    println!("\n{}", bold(title));
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["finished"].to_string(),
                percent(&r["first_attempt_success_rate"]),
                percent(&r["success_rate_after_retries"]),
                r["mean_attempts"]
                    .as_f64()
                    .map_or_else(|| dim("–"), |m| format!("{m:.2}")),
            ]
        })
        .collect();
    table(
        "  ",
        &[
            label,
            "FINISHED",
            "FIRST TRY",
            "AFTER RETRIES",
            "MEAN ATTEMPTS",
        ],
        &rows,
    );
}

pub async fn stats(client: &Client, args: StatsArgs, json: bool) -> Result<u8> {
    let mut query = vec![("window", args.window.clone())];
    for (key, value) in [
        ("queue", args.queue),
        ("kind", args.kind),
        ("target", args.target),
    ] {
        if let Some(value) = value {
            query.push((key, value));
        }
    }
    let stats: Value = client.get_query("/stats", &query).await?;
    if json {
        output::json(&stats);
        return Ok(crate::exit::OK);
    }
    println!("{} (last {})", bold("Stats"), args.window);
    let totals = stats["totals"]
        .as_object()
        .map(|t| {
            t.iter()
                .map(|(state, n)| format!("{} {n}", output::state(state)))
                .collect::<Vec<_>>()
                .join("  ")
        })
        .unwrap_or_default();
    println!("  {:<24}{totals}", "jobs created");
    println!("  {:<24}{}", "pending retries", stats["pending_retries"]);
    println!("  {:<24}{}", "finished", stats["finished"]);
    println!(
        "  {:<24}{}",
        "first-attempt success",
        percent(&stats["first_attempt_success_rate"])
    );
    let verdict = match stats["meets_target"].as_bool() {
        Some(true) => output::green("meets the 80 % target"),
        Some(false) => output::red("below the 80 % target"),
        None => dim("no finished job yet"),
    };
    println!(
        "  {:<24}{}  {verdict}",
        "success after retries",
        percent(&stats["success_rate_after_retries"])
    );
    println!(
        "  {:<24}{}",
        "mean attempts",
        stats["mean_attempts"]
            .as_f64()
            .map_or_else(|| dim("–"), |m| format!("{m:.2}"))
    );
    if let Some(errors) = stats["top_errors"].as_array().filter(|e| !e.is_empty()) {
        println!("\n{}", bold("Top errors"));
        let rows: Vec<Vec<String>> = errors
            .iter()
            .map(|e| {
                vec![
                    e["count"].to_string(),
                    e["attempts"].to_string(),
                    e["class"].as_str().unwrap_or("–").to_owned(),
                    output::cut_at_word(e["message"].as_str().unwrap_or_default(), 100),
                ]
            })
            .collect();
        table("  ", &["JOBS", "ATTEMPTS", "CLASS", "MESSAGE"], &rows);
    }
    breakdown("By kind", "KIND", &stats["by_kind"]);
    breakdown("By target", "TARGET", &stats["by_target"]);
    Ok(crate::exit::OK)
}
