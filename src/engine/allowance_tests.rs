//! Quotas, rate limits, "quota used up" answers, headroom and the state file, driven
//! through the engine on fakes and a manual clock that reads as calendar time.

use std::time::Duration;

use crate::engine::test_rig::Rig;
use crate::foundation::calendar::days_from_civil;
use crate::foundation::clock::Clock;
use crate::foundation::error::{AttemptKind, Error};
use crate::foundation::request::{Priority, Request};
use crate::upstream::fake_transport::Reply;

const MINUTE: Duration = Duration::from_secs(60);

fn at(y: i64, mo: u32, d: u32, h: u64, mi: u64) -> Duration {
    Duration::from_secs(days_from_civil(y, mo, d) as u64 * 86_400 + h * 3600 + mi * 60)
}

fn two(free: &str, paid: &str, defaults: &str) -> String {
    format!(
        "[defaults]\n{defaults}\n\
         [[services.s.providers]]\nname = \"free\"\nbase_url = \"http://10.0.0.1\"\n{free}\n\
         [[services.s.providers]]\nname = \"paid\"\nbase_url = \"http://10.0.0.2\"\n{paid}\n"
    )
}

fn call(rig: &Rig, priority: Priority) -> Result<crate::Response, Error> {
    rig.core
        .drive_call(Request::get("s", "/q").priority(priority))
}

fn sent(rig: &Rig, name: &str) -> usize {
    rig.fake(name).sent().len()
}

#[test]
fn a_scripted_day_gives_the_free_tier_its_100_and_the_next_day_it_is_first_again() {
    let config = two(
        "cost_per_request = 0.0\nquota = { per_day = 100 }",
        "cost_per_request = 0.01",
        "strategy = \"cost_aware\"",
    );
    let rig = Rig::starting_at(&config, at(2026, 12, 1, 9, 0));
    // 150 calls, one every five minutes, from 09:00 to 21:25.
    for _ in 0..150 {
        assert_eq!(call(&rig, Priority::Normal).unwrap().status(), 200);
        rig.clock.advance(5 * MINUTE);
    }
    assert_eq!((sent(&rig, "free"), sent(&rig, "paid")), (100, 50));
    let s = &rig.core.snapshot().services["s"];
    let quota = &s.providers["free"].quota["per_day"];
    assert_eq!((quota.limit, quota.used), (100, 100));
    assert_eq!(
        s.providers["free"].resting_reason,
        Some("quota"),
        "the reason shows"
    );
    assert_eq!(
        quota.resets_in_ms,
        (at(2026, 12, 2, 0, 0) - rig.clock.now()).as_millis() as u64,
        "the day ends at midnight UTC, not 24 h after the first call"
    );
    assert!((s.cost_today - 0.5).abs() < 1e-9, "{}", s.cost_today);
    // Just past midnight: the free tier again, first.
    rig.clock.advance(at(2026, 12, 2, 0, 1) - rig.clock.now());
    assert_eq!(call(&rig, Priority::Normal).unwrap().provider(), "free");
    assert_eq!(rig.core.snapshot().services["s"].cost_today, 0.0);
}

#[test]
fn a_monthly_quota_resets_on_the_first() {
    let config = two(
        "cost_per_request = 0.0\nquota = { per_month = 3, reset_utc = \"06:00\" }",
        "cost_per_request = 0.01",
        "strategy = \"cost_aware\"",
    );
    let rig = Rig::starting_at(&config, at(2026, 12, 31, 12, 0));
    let providers: Vec<String> = (0..5)
        .map(|_| call(&rig, Priority::Normal).unwrap().provider().to_string())
        .collect();
    assert_eq!(providers, ["free", "free", "free", "paid", "paid"]);
    rig.clock.advance(at(2027, 1, 1, 5, 59) - rig.clock.now());
    assert_eq!(call(&rig, Priority::Normal).unwrap().provider(), "paid");
    rig.clock.advance(MINUTE);
    assert_eq!(
        call(&rig, Priority::Normal).unwrap().provider(),
        "free",
        "06:00 on the 1st"
    );
}

fn quota_answer_is_asked_once(reply: impl Fn() -> Reply, free: &str) {
    let config = two(free, "", "strategy = \"round_robin\"");
    let rig = Rig::starting_at(&config, at(2026, 12, 1, 12, 0));
    rig.fake("free").push(reply());
    for _ in 0..20 {
        rig.fake("free").push(reply());
        let r = call(&rig, Priority::Normal).unwrap();
        assert_eq!((r.status(), r.provider()), (200, "paid"));
    }
    assert_eq!(sent(&rig, "free"), 1, "asked once, then rests");
    let p = &rig.core.snapshot().services["s"].providers["free"];
    assert_eq!(p.circuit.state, "closed");
    assert_eq!(p.resting_reason, Some("quota"));
    assert_eq!(p.failures_by_kind["quota"], 1);
    assert_eq!(
        p.resting_ms,
        (at(2026, 12, 2, 0, 0) - rig.clock.now()).as_millis() as u64,
        "until its day resets"
    );
    assert_eq!(
        rig.core.circuit("free").unwrap().failures,
        0,
        "no breaker failure"
    );
}

#[test]
fn a_402_rests_the_provider_fails_over_and_spares_its_breaker() {
    quota_answer_is_asked_once(
        || Reply::Status(402),
        "circuit_breaker = { failure_threshold = 1 }",
    );
}

#[test]
fn a_throttle_notice_sent_with_200_counts_as_quota_used_up() {
    quota_answer_is_asked_once(
        || {
            Reply::Answer {
            status: 200,
            headers: vec![],
            body: br#"{"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 25 requests per day."}"#.to_vec(),
        }
        },
        "classify = { quota_body = [\"API call frequency\"] }",
    );
}

#[test]
fn a_quota_answer_with_a_reset_header_rests_only_that_long() {
    let rig = Rig::starting_at(&two("", "", ""), at(2026, 12, 1, 12, 0));
    for name in ["free", "paid"] {
        rig.fake(name).push(Reply::Answer {
            status: 402,
            headers: vec![("retry-after", "90".into())],
            body: vec![],
        });
    }
    match call(&rig, Priority::Normal) {
        Err(Error::QuotaExhausted { waits, .. }) => {
            assert_eq!(waits.len(), 2);
            assert!(waits
                .iter()
                .all(|w| w.reason == "quota" && w.frees_in == Some(Duration::from_secs(90))));
        }
        other => panic!("{other:?}"),
    }
    rig.clock.advance(Duration::from_secs(90));
    assert!(call(&rig, Priority::Normal).is_ok());
}

#[test]
fn reserve_keeps_headroom_for_urgent_calls_and_refuses_the_rest_clearly() {
    let config = two("quota = { per_day = 10 }", "", "reserve = 0.5");
    let config = config.replace(
        "[[services.s.providers]]\nname = \"paid\"\nbase_url = \"http://10.0.0.2\"\n\n",
        "",
    );
    let rig = Rig::starting_at(&config, at(2026, 12, 1, 12, 0));
    for _ in 0..5 {
        assert!(call(&rig, Priority::Low).is_ok());
    }
    for _ in 0..3 {
        match call(&rig, Priority::Low) {
            Err(e @ Error::QuotaExhausted { .. }) => {
                let text = e.to_string();
                assert!(text.contains("free") && text.contains("reserved"), "{text}");
                assert!(text.contains("frees up in 12 h 0 min"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }
    for _ in 0..5 {
        assert!(call(&rig, Priority::Critical).is_ok());
    }
    let e = call(&rig, Priority::Critical).unwrap_err();
    assert!(e.to_string().contains("free quota used up"), "{e}");
    assert_eq!(sent(&rig, "free"), 10, "refusals charge nobody");
    let p = &rig.core.snapshot().services["s"].providers["free"];
    assert_eq!(p.quota["per_day"].used, 10);
    assert_eq!(p.quota_rejections, 4, "one per refused request");
}

#[test]
fn a_request_held_back_only_by_a_rate_limit_waits_queued_for_its_token() {
    let rig = Rig::new(&Rig::config(&["a"], "rate = { per_second = 2 }"));
    let tickets: Vec<_> = (0..3)
        .map(|i| {
            rig.core
                .queue_request(Request::get("s", format!("/{i}")))
                .unwrap()
        })
        .collect();
    assert_eq!(rig.work_all(10), 3);
    assert_eq!(sent(&rig, "a"), 1, "one token now, the others wait");
    assert_eq!(rig.next_timer(), Some(Duration::from_millis(500)));
    assert_eq!(
        rig.core.snapshot().services["s"].queue_depth,
        2,
        "still queued"
    );
    for step in 1..=2u32 {
        rig.clock.advance(Duration::from_millis(500));
        rig.fire_timers();
        rig.work_all(10);
        assert_eq!(sent(&rig, "a"), 1 + step as usize);
    }
    for t in tickets {
        assert_eq!(t.wait().unwrap().status(), 200);
    }
}

#[test]
fn a_rate_token_due_after_the_deadline_sends_the_request_elsewhere() {
    let config = two(
        "rate = { per_minute = 1 }",
        "",
        "strategy = \"round_robin\"",
    )
    .replace("name = \"paid\"", "name = \"paid\"\ntier = 2");
    let rig = Rig::new(&config);
    assert_eq!(call(&rig, Priority::Normal).unwrap().provider(), "free");
    let quick = Request::get("s", "/q").timeout(Duration::from_secs(5));
    assert_eq!(rig.core.drive_call(quick).unwrap().provider(), "paid");
    let one_only = Rig::new(&Rig::config(&["a"], "rate = { per_minute = 1 }"));
    one_only.core.drive_call(Request::get("s", "/q")).unwrap();
    let quick = Request::get("s", "/q").timeout(Duration::from_secs(5));
    match one_only.core.drive_call(quick) {
        Err(e @ Error::QuotaExhausted { .. }) => {
            assert!(
                e.to_string()
                    .contains("a rate limit reached, frees up in 60 s"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn retries_and_failed_attempts_use_up_quota_too() {
    let rig = Rig::starting_at(
        &Rig::config(
            &["a"],
            "quota = { per_day = 3 }\nretry = { base_delay_ms = 1, max_backoff_ms = 1 }",
        ),
        at(2026, 12, 1, 12, 0),
    );
    rig.fake("a").push(Reply::Fail(AttemptKind::Connect));
    rig.fake("a").push(Reply::Status(503));
    let mut ticket = rig.core.queue_request(Request::get("s", "/q")).unwrap();
    rig.work_all(5);
    // Each backoff (at most 1 ms) waits in the timer, on the manual clock.
    for _ in 0..2 {
        rig.clock.advance(Duration::from_millis(1));
        assert_eq!(rig.fire_timers(), 1);
        rig.work_all(5);
    }
    let answer = ticket.try_wait().expect("answered by the third attempt");
    assert_eq!(answer.unwrap().attempts(), 3);
    let p = &rig.core.snapshot().services["s"].providers["a"];
    assert_eq!(p.quota["per_day"].used, 3);
    assert!(matches!(
        rig.core.drive_call(Request::get("s", "/q")),
        Err(Error::QuotaExhausted { .. })
    ));
}

#[test]
fn a_restart_with_a_state_file_continues_the_days_count() {
    let dir = std::env::temp_dir().join(format!("switchyard-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    let config = Rig::config(
        &["a"],
        &format!(
            "state_file = {:?}\nquota = {{ per_day = 10 }}",
            path.display().to_string()
        ),
    );
    let noon = at(2026, 12, 1, 12, 0);
    {
        let rig = Rig::starting_at(&config, noon);
        for _ in 0..4 {
            rig.core.drive_call(Request::get("s", "/q")).unwrap();
        }
        rig.core.save_state();
    }
    let rig = Rig::starting_at(&config, noon + MINUTE);
    let p = &rig.core.snapshot().services["s"].providers["a"];
    assert_eq!(p.quota["per_day"].used, 4, "the day's count goes on");
    // The next day the saved count is yesterday's and does not apply.
    let tomorrow = Rig::starting_at(&config, noon + Duration::from_secs(86_400));
    let p = &tomorrow.core.snapshot().services["s"].providers["a"];
    assert_eq!(p.quota["per_day"].used, 0);
    // A corrupt file starts from zero, never a crash.
    std::fs::write(
        &path,
        b"{\"version\": 1, \"providers\": {\"a\": {\"quota\": 7}}",
    )
    .unwrap();
    let rig = Rig::starting_at(&config, noon);
    assert_eq!(
        rig.core.snapshot().services["s"].providers["a"].quota["per_day"].used,
        0
    );
    std::fs::write(&path, b"\x00garbage").unwrap();
    let rig = Rig::starting_at(&config, noon);
    assert!(rig.core.drive_call(Request::get("s", "/q")).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cost_aware_holds_the_slo_within_ten_percent_of_the_cheapest_mix() {
    let config = two(
        "cost_per_request = 1.0",
        "cost_per_request = 10.0",
        "strategy = \"cost_aware\"\nrandom_seed = 7\nslo = { success_rate = 0.99, p99_ms = 2000 }\n\
         retry = { max_attempts = 2 }\n\
         circuit_breaker = { window_ms = 10000, failure_threshold = 100000, minimum_calls = 100000 }",
    );
    let rig = Rig::starting_at(&config, at(2026, 12, 1, 8, 0));
    // The script: 20 minutes at 10 requests a second; from minute 5 to 6 half the cheap
    // provider's calls fail.
    let (start, step, requests) = (rig.clock.now(), Duration::from_millis(100), 12_000);
    let degraded = |t: Duration| (5 * MINUTE..6 * MINUTE).contains(&t);
    {
        let clock = rig.clock.clone();
        rig.fake("free").script(move |n| {
            let t = crate::foundation::clock::Clock::now(&*clock) - start;
            if degraded(t) && n % 2 == 0 {
                Reply::Status(500)
            } else {
                Reply::Status(200)
            }
        });
    }
    let mut ok = 0;
    for _ in 0..requests {
        ok += usize::from(call(&rig, Priority::Normal).is_ok());
        rig.clock.advance(step);
    }
    // Offline, from the same script: each request to the cheapest provider whose success
    // rate at that moment meets the SLO (the cheap one's is 0.5 while degraded).
    let ideal: f64 = (0..requests)
        .map(|i| if degraded(step * i as u32) { 10.0 } else { 1.0 })
        .sum();
    let success = ok as f64 / requests as f64;
    let cost = rig.core.snapshot().services["s"].cost_total;
    assert!(success >= 0.99, "callers' success rate {success}");
    assert!(
        cost <= ideal * 1.10,
        "cost {cost} against the cheapest mix's {ideal}"
    );
    assert!(cost >= ideal, "no cheaper than the ideal: {cost} < {ideal}");
    eprintln!(
        "cost_aware: success {success:.4}, cost {cost} = {:.3} x the cheapest mix ({ideal})",
        cost / ideal
    );
}

#[test]
fn a_failed_attempt_with_nothing_left_but_a_used_up_quota_ends_at_once() {
    let config = two(
        "circuit_breaker = { failure_threshold = 1 }",
        "quota = { per_day = 1 }",
        "retry = { max_attempts = 3 }",
    );
    let rig = Rig::starting_at(&config, at(2026, 12, 1, 12, 0));
    let paid = &rig.core.services()[0].providers[1];
    paid.allowance.take(rig.clock.now(), true).unwrap().commit();
    rig.fake("free").push(Reply::Status(503));
    // The free one's circuit opens; waiting out a backoff could not bring the paid one
    // back today, so the request ends now instead of at its deadline.
    let mut ticket = rig.core.queue_request(Request::get("s", "/q")).unwrap();
    rig.work_all(5);
    assert_eq!(rig.next_timer(), None, "no backoff is waited");
    match ticket.try_wait() {
        Some(Err(Error::AllProvidersFailed { attempts })) => assert_eq!(attempts.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(sent(&rig, "paid"), 0);
}
