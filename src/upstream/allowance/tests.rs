use super::*;
use crate::foundation::clock::{Clock, ManualClock};
use crate::foundation::config::Config;

const MS: Duration = Duration::from_millis(1);

fn allowance(extra: &str) -> (Allowance, Arc<ManualClock>) {
    let c = Config::from_toml_str(&format!(
        "[defaults]\n{extra}\n[[services.s.providers]]\nname = \"p\"\nbase_url = \"http://10.0.0.1\"\n"
    ))
    .unwrap();
    let clock = ManualClock::shared();
    // Noon on 2026-12-01 UTC.
    clock.advance(Duration::from_secs(1_796_126_400));
    let provider = &c.resolve().unwrap().services[0].providers[0];
    (Allowance::new(provider, clock.clone()), clock)
}

#[test]
fn a_grant_dropped_unsent_gives_its_share_back() {
    let (a, clock) = allowance("quota = { per_day = 2 }");
    let now = clock.now();
    let first = a.take(now, false).unwrap();
    drop(a.take(now, false).unwrap());
    let second = a.take(now, false).unwrap();
    first.commit();
    second.commit();
    assert!(matches!(
        a.take(now, true),
        Err(Holdback::Quota {
            reserved: false,
            ..
        })
    ));
    assert_eq!(a.view(now).quota[0].used, 2);
}

#[test]
fn announced_counts_only_fall_inside_a_window_and_the_last_one_rests() {
    let (a, clock) = allowance("");
    let now = clock.now();
    let told = |remaining, reset_s| Announced {
        remaining: Some(remaining),
        reset: Some(Duration::from_secs(reset_s)),
        ..Announced::default()
    };
    a.announce(&told(5, 30), now, 2);
    assert_eq!(
        a.view(now).announced_left,
        Some(3),
        "two in flight may not be counted"
    );
    a.announce(&told(9, 30), now, 0);
    assert_eq!(
        a.view(now).announced_left,
        Some(3),
        "a stale answer does not raise it"
    );
    for _ in 0..3 {
        a.take(now, false).unwrap().commit();
    }
    assert_eq!(
        a.check(now, true),
        Err(Holdback::Rest {
            until: now + Duration::from_secs(30),
            reason: RestReason::RateHeaders
        })
    );
    // A new window: its figure replaces the old one.
    let later = now + Duration::from_secs(31);
    a.announce(&told(20, 60), later, 0);
    assert_eq!(a.view(later).announced_left, Some(20));
    assert!(a.check(later, false).is_ok());
}

#[test]
fn a_quota_answer_rests_until_the_reset_it_names_or_the_quotas() {
    let (a, clock) = allowance("quota = { per_day = 100, reset_utc = \"06:00\" }");
    let now = clock.now();
    a.used_up(&Announced::default(), now);
    let (until, reason) = a.rest(now).unwrap();
    assert_eq!(reason, RestReason::Quota);
    assert_eq!(
        until,
        now + Duration::from_secs(18 * 3600),
        "06:00 tomorrow"
    );
    let (b, clock) = allowance("");
    let now = clock.now();
    let named = Announced {
        retry_after: Some(Duration::from_secs(90)),
        ..Announced::default()
    };
    b.used_up(&named, now);
    assert_eq!(b.rest(now).unwrap().0, now + Duration::from_secs(90));
    assert_eq!(b.view(now).quota_rejections, 1);
}

#[test]
fn a_rate_take_that_fails_gives_the_quota_back() {
    let (a, clock) = allowance("rate = { per_second = 1 }\nquota = { per_day = 10 }");
    let now = clock.now();
    a.take(now, true).unwrap().commit();
    assert_eq!(
        a.take(now, true).unwrap_err(),
        Holdback::Rate {
            due: Some(now + 1000 * MS)
        }
    );
    assert_eq!(a.view(now).quota[0].used, 1);
}

#[test]
fn concurrent_takes_never_commit_more_than_the_quota_and_refunds_return_exactly() {
    let (a, clock) = allowance("quota = { per_day = 50 }\nrate = { per_second = 1000000 }");
    let a = Arc::new(a);
    let committed = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (a, clock, committed) = (&a, &clock, &committed);
            s.spawn(move || {
                for i in 0..200u64 {
                    // Threads at nearby moments: the rate (one per microsecond) refuses
                    // some takes, whose quota share must come back too.
                    let now = clock.now() + Duration::from_nanos(i * 2_000 + t * 200);
                    if let Ok(grant) = a.take(now, i % 2 == 0) {
                        if (i + t) % 3 == 0 {
                            drop(grant); // never sent: given back
                        } else {
                            grant.commit();
                            committed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    let committed = committed.load(std::sync::atomic::Ordering::SeqCst);
    let used = a.view(clock.now()).quota[0].used;
    assert!(committed <= 50, "{committed} committed of a quota of 50");
    assert_eq!(used, committed, "refunds give back exactly what they took");
    assert!(
        committed >= 40,
        "the quota is used, not lost to refunds: {committed}"
    );
}
