//! `retry()` against backon and tokio-retry with the same zero-delay policy: the success path
//! (one call that succeeds) and the three-retry path (three transient failures, then success).
//! Async for all three, on a current-thread tokio runtime; run by `bash bench/run.sh`.

use backon::{ConstantBuilder, Retryable};
use criterion::{Criterion, criterion_group, criterion_main};
use retryd_core::retry::{Retry, Transient};
use retryd_core::{Jitter, Policy};
use std::hint::black_box;
use std::time::Duration;

fn zero_delay() -> Policy {
    Policy {
        max_attempts: 5,
        initial_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        jitter: Jitter::None,
        ..Policy::default()
    }
}

/// Fails `failures` times, then succeeds.
async fn op(attempt: u32, failures: u32) -> Result<u64, Transient<&'static str>> {
    if attempt <= failures {
        Err(Transient("busy"))
    } else {
        Ok(black_box(42))
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let policy = zero_delay();
    for (label, failures) in [("success", 0), ("three_retries", 3)] {
        let mut group = c.benchmark_group(label);
        group.bench_function("retryd", |b| {
            b.to_async(&runtime).iter(|| async {
                Retry::new(&policy)
                    .run(|attempt| op(attempt, failures), tokio::time::sleep)
                    .await
                    .unwrap()
            })
        });
        group.bench_function("backon", |b| {
            b.to_async(&runtime).iter(|| async {
                let mut attempt = 0;
                (|| {
                    attempt += 1;
                    op(attempt, failures)
                })
                .retry(
                    ConstantBuilder::default()
                        .with_delay(Duration::ZERO)
                        .with_max_times(4),
                )
                .sleep(tokio::time::sleep)
                .await
                .unwrap()
            })
        });
        group.bench_function("tokio-retry", |b| {
            b.to_async(&runtime).iter(|| async {
                let mut attempt = 0;
                let strategy = tokio_retry::strategy::FixedInterval::new(Duration::ZERO).take(4);
                tokio_retry::Retry::start(strategy, || {
                    attempt += 1;
                    op(attempt, failures)
                })
                .await
                .unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
