//! Configuration files: the documented example loads, JSON and TOML agree, errors name paths.

use switchyard::{Balancer, Config, Error};

fn set_example_keys() {
    for k in [
        "POLYGON_KEY",
        "FINNHUB_KEY",
        "MARKETSTACK_KEY",
        "NEWSAPI_KEY",
        "GNEWS_KEY",
    ] {
        std::env::set_var(k, "example-key");
    }
}

#[test]
fn the_documented_example_loads() {
    set_example_keys();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/switchyard.toml");
    let config = Config::from_file(path).unwrap();
    let stocks = &config.services["stocks"];
    assert_eq!(stocks.providers.len(), 3);
    assert_eq!(stocks.pool.max_connections, Some(20));
    let lb = Balancer::new(config).unwrap();
    assert_eq!(lb.services().collect::<Vec<_>>(), ["news", "stocks"]);
    let news = &lb.metrics().services["news"];
    assert_eq!(news.strategy, "cost_aware");
    assert_eq!(news.providers["newsapi"].quota["per_day"].limit, 100);
    lb.shutdown(std::time::Duration::ZERO);
}

#[test]
fn a_json_file_reads_like_toml() {
    set_example_keys();
    let toml = Config::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/switchyard.toml"
    ))
    .unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchyard.json");
    let text = serde_json::to_string_pretty(&toml).unwrap();
    std::fs::write(&path, &text).unwrap();
    let json = Config::from_file(&path).unwrap();
    // Serializing hides the secrets; everything else comes back the same.
    let mut hidden = toml.clone();
    for p in hidden.services.values_mut().flat_map(|s| &mut s.providers) {
        for v in p.headers.values_mut().chain(p.query.values_mut()) {
            *v = "[redacted]".into();
        }
    }
    assert_eq!(json, hidden);
    for p in toml.services.values().flat_map(|s| &s.providers) {
        for v in p.headers.values().chain(p.query.values()) {
            assert!(!text.contains(v.as_str()), "a secret was serialized");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_file_is_named() {
    match Config::from_file("/nonexistent/switchyard.toml") {
        Err(Error::Config(e)) => assert!(e.reason.contains("/nonexistent/switchyard.toml"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn syntax_errors_say_where() {
    let e = Config::from_toml_str("[services.s\nname = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid TOML") && e.contains("line 1"), "{e}");
    let e = Config::from_json_str("{\"services\": [}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid JSON") && e.contains("line 1"), "{e}");
}
