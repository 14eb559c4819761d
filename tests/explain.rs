//! `explain`: the decision for a request without sending it, against real servers that
//! must see nothing.

mod support;

use support::{provider, TestServer};
use switchyard::{Balancer, Priority, Request};

#[test]
fn explain_names_the_forced_open_provider_and_the_pick_and_sends_nothing() {
    let servers: Vec<TestServer> = (0..4).map(|_| TestServer::start()).collect();
    let text = "[defaults]\nstrategy = \"round_robin\"\n".to_string()
        + &provider(
            "s",
            "open",
            &servers[0].url(),
            "endpoints = { quote = \"/q\" }",
        )
        + &provider(
            "s",
            "ready",
            &servers[1].url(),
            "endpoints = { quote = \"/q\" }",
        )
        + &provider(
            "s",
            "spare",
            &servers[2].url(),
            "tier = 2\nendpoints = { quote = \"/q\" }",
        )
        + &provider(
            "s",
            "raw_only",
            &servers[3].url(),
            "quota = { per_day = 1 }",
        );
    let lb = Balancer::from_toml_str(&text).unwrap();
    lb.force_open("open").unwrap();
    let e = lb
        .explain(&Request::get("s", "quote").param("symbol", "AAPL"))
        .unwrap();
    assert_eq!(e.pick.as_deref(), Some("ready"), "{e:#?}");
    assert!(
        e.why.contains("tier 1") && e.why.contains("ready"),
        "{}",
        e.why
    );
    let by = |name: &str| e.candidates.iter().find(|c| c.provider == name).unwrap();
    assert_eq!(by("open").circuit, "open");
    assert_eq!(by("open").skipped.as_deref(), Some("circuit open"));
    assert!(by("ready").skipped.is_none() && by("ready").score.is_some());
    assert!(by("spare")
        .skipped
        .as_deref()
        .unwrap()
        .starts_with("tier 2"));
    assert!(by("raw_only")
        .skipped
        .as_deref()
        .unwrap()
        .contains("does not serve"));
    assert_eq!(by("raw_only").quota_remaining, Some(1));
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["pick"], "ready");
    assert!(
        servers.iter().all(|s| s.requests() == 0),
        "nothing was sent"
    );
    assert_eq!(lb.metrics().services["s"].requests, 0, "nor counted");

    // A provider whose quota is used up says so; with every tier-1 out, tier 2 is picked.
    let raw = Request::get("s", "/v1/time").priority(Priority::High);
    lb.force_open("ready").unwrap();
    assert_eq!(lb.call(raw.clone()).unwrap().provider(), "raw_only");
    let e = lb.explain(&raw).unwrap();
    let by = |name: &str| {
        e.candidates
            .iter()
            .find(|c| c.provider == name)
            .unwrap()
            .clone()
    };
    assert!(
        by("raw_only").skipped.unwrap_or_default().contains("quota"),
        "{e:#?}"
    );
    assert_eq!(e.pick.as_deref(), Some("spare"), "{e:#?}");
    let unknown = lb.explain(&Request::get("nope", "/x")).unwrap_err();
    assert!(unknown.to_string().contains("nope"));
}
