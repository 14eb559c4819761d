//! The configuration loader's tests: schema, layering, refusals with key paths, secrets.

use super::*;
use std::time::Duration;

fn err(text: &str) -> String {
    Config::from_toml_str(text).unwrap_err().to_string()
}

const ONE: &str = r#"
    [[services.s.providers]]
    name = "a"
    base_url = "http://127.0.0.1:1"
"#;

#[test]
fn defaults_follow_the_contract() {
    let c = Config::from_toml_str(ONE).unwrap();
    let r = c.resolve().unwrap();
    let s = &r.services[0];
    assert_eq!(s.deadline, Duration::from_secs(45));
    assert_eq!(s.queue.max_size, 1000);
    assert_eq!(s.retry.max_attempts, 3);
    assert_eq!(s.providers[0].pool.max_connections, 10);
    assert_eq!(s.providers[0].circuit_breaker.failure_threshold, 5);
    assert_eq!(s.providers[0].weight, 100);
    assert_eq!(c.defaults.strategy, StrategyKind::HealthBased);
}

#[test]
fn overrides_layer_defaults_service_provider() {
    let c = Config::from_toml_str(
        r#"
        [defaults.pool]
        max_connections = 7
        request_timeout_ms = 100
        [services.s.pool]
        max_connections = 5
        [[services.s.providers]]
        name = "a"
        base_url = "http://127.0.0.1:1/v1/"
        tier = 2
        pool = { max_connections = 2 }
        [[services.s.providers]]
        name = "b"
        base_url = "http://127.0.0.1:2"
    "#,
    )
    .unwrap();
    let r = c.resolve().unwrap();
    let p = &r.services[0].providers;
    assert_eq!(
        (p[0].pool.max_connections, p[1].pool.max_connections),
        (2, 5)
    );
    assert_eq!(p[0].pool.request_timeout_ms, 100);
    assert_eq!(p[0].weight, 75);
    assert_eq!(p[0].base_url, "http://127.0.0.1:1/v1");
}

#[test]
fn json_and_toml_read_the_same_schema() {
    let json =
        r#"{"services": {"s": {"providers": [{"name": "a", "base_url": "http://127.0.0.1:1"}]}}}"#;
    assert_eq!(
        Config::from_json_str(json).unwrap(),
        Config::from_toml_str(ONE).unwrap()
    );
    assert_eq!(
        Config::from_str_as(json, None).unwrap(),
        Config::from_toml_str(ONE).unwrap()
    );
}

#[test]
fn every_refusal_names_its_path() {
    let cases = [
        (
            r#"[[services.stocks.providers]]
            name = "a"
            base_url = "http://h"
            [[services.stocks.providers]]
            name = "b"
            base_url = "htp://x""#,
            r#"services.stocks.providers[1].base_url: "htp://x" is not an http(s) URL"#,
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            [[services.t.providers]]
            name = "a"
            base_url = "http://h""#,
            "services.t.providers[0].name: provider name `a` is used twice",
        ),
        (
            r#"[[services.s.providers]]
            name = "Fallback"
            base_url = "http://h""#,
            "services.s.providers[0].name: `Fallback` is reserved: answers made by a fallback name it as their provider",
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            headers = { X-Key = "a\u0001b" }"#,
            "services.s.providers[0].headers.X-Key: has a control character in its value",
        ),
        ("[services.s]", "services.s.providers: a service needs at least one provider"),
        ("", "services: no service is configured"),
        (
            r#"[defaults.pool]
            max_connections = 0"#,
            "defaults.pool.max_connections: must be greater than 0",
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            pool = { max_connections = 0 }"#,
            "services.s.providers[0].pool.max_connections: must be greater than 0",
        ),
        (
            r#"[defaults]
            strategy = "fastest""#,
            "defaults.strategy: unknown variant `fastest`",
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            tier = 4"#,
            "services.s.providers[0].tier: 4 is not 1, 2 or 3",
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q/{}" }"#,
            r#"services.s.providers[0].endpoints.quote: "/q/{}" has an empty placeholder `{}`"#,
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q/{symbol" }"#,
            "services.s.providers[0].endpoints.quote: \"/q/{symbol\" has a `{` with no closing `}`",
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q" }
            shape = { quote = { price = "results/0/p" } }"#,
            r#"services.s.providers[0].shape.quote.price: "results/0/p" is not a JSON pointer: it must be empty or start with /"#,
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            shape = { quote = { price = "/p" } }"#,
            "services.s.providers[0].shape.quote: the provider does not serve endpoint `quote` (see its endpoints)",
        ),
        (
            r#"[services.s.endpoints.quote]
            cache_ttl_ms = 1000
            cache_max_entries = 0
            [[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q" }"#,
            "services.s.endpoints.quote.cache_max_entries: must be at least 1 when cache_ttl_ms is set",
        ),
        (
            r#"[services.s.endpoints.quote]
            hedge_after_ms = 50
            [[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q" }"#,
            "services.s.endpoints.quote.hedge_after_ms: a hedge goes to a different provider, and only one serves this endpoint",
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q/{symbol}" }
            batch = { quote = { path = "/qs", param = "symbol", query = "symbols", item = "/results" } }"#,
            r#"services.s.providers[0].batch.quote.item: "/results" does not name its param: it needs {symbol} where the item goes"#,
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q/{symbol}" }
            batch = { quote = { path = "/qs", param = "symbol", query = "symbols", item = "results/{symbol}" } }"#,
            r#"services.s.providers[0].batch.quote.item: "results/{symbol}" is not a JSON pointer: it must be empty or start with /"#,
        ),
        (
            r#"[services.s.endpoints.quote]
            batch_window_ms = 5
            batch_max = 0
            [[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q/{symbol}" }
            batch = { quote = { path = "/qs", param = "symbol", query = "symbols", item = "/{symbol}" } }"#,
            "services.s.endpoints.quote.batch_max: must be at least 1",
        ),
        (
            r#"[services.s.endpoints.quote]
            batch_window_ms = 5
            [[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q/{symbol}" }"#,
            "services.s.endpoints.quote.batch_window_ms: no provider of the service declares a batch for endpoint `quote`",
        ),
        (
            r#"[services.s.endpoints.quotes]
            cache_ttl_ms = 1000
            [[services.s.providers]]
            name = "a"
            base_url = "http://h"
            endpoints = { quote = "/q" }"#,
            "services.s.endpoints.quotes: no provider of the service serves endpoint `quotes`",
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            tierr = 1"#,
            "services.s.providers[0].tierr: unknown field `tierr`",
        ),
        (
            r#"[[services.s.providers]]
            base_url = "http://h""#,
            "services.s.providers[0]: missing field `name`",
        ),
        (
            r#"[[services.s.providers]]
            name = "a"
            base_url = "http://h"
            headers = { Authorization = "Bearer ${SWITCHYARD_TEST_UNSET_VAR}" }"#,
            "services.s.providers[0].headers.Authorization: environment variable SWITCHYARD_TEST_UNSET_VAR is not set",
        ),
        (
            r#"[defaults.circuit_breaker]
            failure_rate_threshold = 1.5"#,
            "defaults.circuit_breaker.failure_rate_threshold: 1.5 is not above 0 and at most 1",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(got.contains(want), "for\n{text}\nwant: {want}\ngot:  {got}");
    }
}

#[test]
fn env_vars_expand_everywhere() {
    std::env::set_var("SWITCHYARD_TEST_KEY", "k3y");
    let c = Config::from_toml_str(
        r#"[[services.s.providers]]
        name = "a"
        base_url = "http://127.0.0.1:1"
        query = { apiKey = "${SWITCHYARD_TEST_KEY}" }
        headers = { Authorization = "Bearer ${SWITCHYARD_TEST_KEY}!" }"#,
    )
    .unwrap();
    let p = &c.services["s"].providers[0];
    assert_eq!(p.query["apiKey"], "k3y");
    assert_eq!(p.headers["Authorization"], "Bearer k3y!");
}

#[test]
fn secrets_stay_out_of_header_errors() {
    std::env::set_var("SWITCHYARD_TEST_SECRET", "s3cr3t\n");
    let got = err(r#"[[services.s.providers]]
        name = "a"
        base_url = "http://h"
        headers = { Authorization = "${SWITCHYARD_TEST_SECRET}" }"#);
    assert!(got.contains("headers.Authorization"), "{got}");
    assert!(!got.contains("s3cr3t"), "{got}");
}

#[test]
fn no_secret_reaches_an_error_debug_or_serialize() {
    std::env::set_var("SWITCHYARD_TEST_KEY", "k-7f3a9c1e");
    let cases = [
        // The wrong type: serde would quote the expanded value.
        r#"[[services.s.providers]]
        name = "a"
        base_url = "http://h"
        headers = "Bearer ${SWITCHYARD_TEST_KEY}""#,
        // A key in the URL's path, refused for another reason.
        r#"[[services.s.providers]]
        name = "a"
        base_url = "ftp://h/${SWITCHYARD_TEST_KEY}/""#,
        // A literal secret on a line with a syntax error.
        "[[services.s.providers]]\nname = \"a\"\nheaders = { X = \"k-7f3a9c1e\" \n",
        // A literal secret of the wrong type.
        r#"[[services.s.providers]]
        name = "a"
        base_url = "http://h"
        query = { key = ["k-7f3a9c1e"] }"#,
    ];
    for text in cases {
        let got = err(text);
        assert!(!got.contains("k-7f3a9c1e"), "{got}");
    }
    assert!(err(cases[2]).contains("line 3"), "{}", err(cases[2]));
    let c = Config::from_toml_str(
        r#"dashboard = { token = "tok-5e5e5e5e" }
        [[services.s.providers]]
        name = "a"
        base_url = "http://h"
        headers = { Authorization = "Bearer ${SWITCHYARD_TEST_KEY}" }
        query = { apikey = "q-1234abcd" }"#,
    )
    .unwrap();
    let shown = format!("{c:?} {c:#?} {}", serde_json::to_string(&c).unwrap());
    for secret in ["k-7f3a9c1e", "q-1234abcd", "tok-5e5e5e5e"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("Authorization") && shown.contains("apikey"));
}

#[test]
fn a_huge_line_gives_a_short_message() {
    let text = format!("x = \"{}", "a".repeat(2_000_000));
    let got = err(&text);
    assert!(
        got.len() < 2 * crate::foundation::error::MAX_MESSAGE,
        "{} bytes",
        got.len()
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any text: a configuration or an error that names where and why, short, no panic.
    #[test]
    fn any_document_loads_or_is_refused_by_name(text in "\\PC{0,200}") {
        for format in [Format::Toml, Format::Json] {
            if let Err(e) = Config::from_str_as(&text, format) {
                let Error::Config(c) = &e else {
                    proptest::prop_assert!(false, "not a config error: {}", e);
                    continue;
                };
                proptest::prop_assert!(!c.reason.is_empty());
                proptest::prop_assert!(e.to_string().len() < 2 * crate::foundation::error::MAX_MESSAGE);
            }
        }
    }

    /// Near-valid documents: one provider with arbitrary values in its fields.
    #[test]
    fn any_provider_fields_load_or_name_their_key(
        name in "\\PC{0,12}",
        url in "\\PC{0,30}",
        tier in proptest::num::i64::ANY,
        header in "\\PC{0,16}",
    ) {
        let doc = serde_json::json!({"services": {"s": {"providers": [
            {"name": name, "base_url": url, "tier": tier, "headers": {"X-K": header}}
        ]}}});
        if let Err(Error::Config(c)) = Config::from_json_str(&doc.to_string()) {
            proptest::prop_assert!(c.path.starts_with("services.s.providers[0]"), "{}", c);
            if header.len() >= 4 {
                proptest::prop_assert!(!c.to_string().contains(&header), "{}", c);
            }
        }
    }
}

#[test]
fn quota_rate_classify_reserve_and_slo_refusals_name_their_path() {
    let p = "[[services.s.providers]]\nname = \"a\"\nbase_url = \"http://h\"\n";
    let cases = [
        (
            format!("{p}rate = {{ per_second = -5 }}"),
            "services.s.providers[0].rate.per_second: invalid value: integer `-5`, expected u64",
        ),
        (
            format!("{p}quota = {{ per_day = 2.5 }}"),
            "services.s.providers[0].quota.per_day: invalid type: floating point `2.5`, expected u64",
        ),
        (
            format!("[services.s.quota]\nreset_utc = \"7am\"\n{p}"),
            "services.s.quota.reset_utc: \"7am\" is not a time of day as HH:MM (00:00 to 23:59)",
        ),
        (
            format!("{p}quota = {{ reset_utc = \"24:00\" }}"),
            "services.s.providers[0].quota.reset_utc: \"24:00\" is not a time of day",
        ),
        (
            format!("[defaults]\nreserve = 1.5\n{p}"),
            "defaults.reserve: 1.5 is not 0 to 1",
        ),
        (
            format!("[services.s]\nreserve = -0.1\n{p}"),
            "services.s.reserve: -0.1 is not 0 to 1",
        ),
        (
            format!("[services.s.slo]\nsuccess_rate = 1.2\n{p}"),
            "services.s.slo.success_rate: 1.2 is not above 0 and at most 1",
        ),
        (
            format!("[defaults.slo]\np99_ms = 0\n{p}"),
            "defaults.slo.p99_ms: must be greater than 0",
        ),
        (
            format!("[services.s]\nstrategy = \"cost_aware\"\n{p}"),
            "services.s.strategy: cost_aware needs a cost_per_request on at least one provider",
        ),
        (
            format!("{p}rate = {{ per_second = 3, burst = 5 }}"),
            "services.s.providers[0].rate.burst: 5 is more than per_second (3)",
        ),
        (
            format!("{p}classify = {{ quota_statuses = [402, 200] }}"),
            "services.s.providers[0].classify.quota_statuses: 200 is not a status from 300 to 599",
        ),
        (
            format!("{p}classify = {{ failure_statuses = [402] }}"),
            "services.s.providers[0].classify.failure_statuses: 402 is also in quota_statuses",
        ),
        (
            format!("{p}classify = {{ quota_body = [\"\"] }}"),
            "services.s.providers[0].classify.quota_body: an empty substring would match every body",
        ),
        (
            format!("[defaults]\nstate_file = \"/nonexistent-switchyard-dir/state.json\"\n{p}"),
            "defaults.state_file: cannot write in directory /nonexistent-switchyard-dir",
        ),
        (
            format!("{p}quota = {{ per_week = 5 }}"),
            "services.s.providers[0].quota.per_week: unknown field `per_week`",
        ),
    ];
    for (text, want) in cases {
        let got = err(&text);
        assert!(got.contains(want), "for\n{text}\nwant: {want}\ngot:  {got}");
    }
    let ok =
        format!(
        "[defaults]\nreserve = 0.25\nstate_file = {:?}\n[services.s]\nstrategy = \"cost_aware\"\n\
         {p}cost_per_request = 0.01\nrate = {{ per_second = 5, per_minute = 60, burst = 2 }}\n\
         quota = {{ per_day = 100, per_month = 2000, reset_utc = \"07:30\" }}\n",
        std::env::temp_dir().join("switchyard-state.json").display().to_string()
    );
    let r = Config::from_toml_str(&ok).unwrap().resolve().unwrap();
    let a = &r.services[0].providers[0];
    assert_eq!(
        (a.rate.per_second, a.rate.per_minute, a.rate.burst),
        (5, 60, 2)
    );
    assert_eq!(
        (a.quota.per_day, a.quota.per_month, a.quota.reset.0),
        (100, 2000, 450)
    );
    assert_eq!(a.reserve, 0.25);
    assert_eq!(a.classify.quota_statuses, vec![402]);
}
