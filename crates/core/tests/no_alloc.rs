//! The success path of `retry()` allocates nothing: a program can wrap hot calls in it.
//! One test function: dhat allows one profiler per process at a time.

use retryd_core::Policy;
use retryd_core::retry::{Retry, Transient};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[test]
fn the_success_path_allocates_nothing() {
    let policy = Policy {
        max_attempts: 2,
        initial_delay: std::time::Duration::ZERO,
        ..Policy::default()
    };
    let _profiler = dhat::Profiler::builder().testing().build();
    // dhat counts every thread's allocations. Another thread of this process (libtest's main
    // thread, which waits for this one) left two live blocks when it started waiting: once,
    // on a loaded machine, one of them fell inside the loop below. It waits long before this.
    std::thread::sleep(std::time::Duration::from_millis(200));

    let before = dhat::HeapStats::get();
    let mut total = 0u64;
    for i in 0..1000u64 {
        total += Retry::new(&policy)
            .run_blocking(|_| Ok::<_, Transient<()>>(i))
            .unwrap();
    }
    let after = dhat::HeapStats::get();
    assert_eq!(total, 499_500);
    dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);

    // The counter does see what a failure allocates, so the zero above means something.
    let failed: Result<(), _> = Retry::new(&policy).run_blocking(|_| Err(Transient(vec![0u8; 64])));
    assert!(failed.is_err());
    let after_failure = dhat::HeapStats::get();
    assert!(after_failure.total_blocks > after.total_blocks);
}
