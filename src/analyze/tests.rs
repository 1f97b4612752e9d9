use super::*;

const SEED: &str = include_str!("../../tests/fixtures/seed.toml");

fn analyzer() -> Analyzer {
    Analyzer::new(&Config::parse(SEED).unwrap())
}

#[test]
fn statements_naming_no_regional_table_are_not_parsed() {
    let a = analyzer().analyze("SELECT * FROM plans WHERE id = 1");
    assert!(a.statements[0].template.facts.refs.is_empty());
    assert!(a.tables().is_empty());
}

#[test]
fn literal_varying_texts_share_one_template() {
    let z = analyzer();
    let a = z.analyze("SELECT * FROM users WHERE region = 'eu' AND id = 1");
    let b = z.analyze("SELECT * FROM users WHERE region = 'us' AND id = 2");
    assert!(Arc::ptr_eq(
        &a.statements[0].template,
        &b.statements[0].template
    ));
    assert_eq!(
        a.fingerprint(),
        "SELECT * FROM users WHERE region = ? AND id = ?"
    );
}

#[test]
fn unparsable_shape_falls_back_to_raw_text() {
    let z = analyzer();
    let a = z.analyze("SELECT CAST(name AS varchar(10)) FROM users WHERE region = 'eu'");
    assert!(a.statements[0].template.parse_error.is_none());
    assert_eq!(a.statements[0].template.facts.refs.len(), 1);
}

#[test]
fn deep_and_chains_are_refused_not_overflowing() {
    let mut sql = String::from("SELECT * FROM users WHERE region = 'eu'");
    for _ in 0..5000 {
        sql.push_str(" AND a = 1");
    }
    let a = analyzer().analyze(&sql);
    assert!(a.has_parse_error());
}

#[test]
fn crdb_as_of_system_time_is_stripped_for_analysis() {
    let (t, hit) = crdb::strip_as_of_system_time(
        "SELECT * FROM users AS OF SYSTEM TIME follower_read_timestamp() WHERE region = 'eu'",
    );
    assert!(hit);
    assert_eq!(t, "SELECT * FROM users   WHERE region = 'eu'");
    let (t, hit) = crdb::strip_as_of_system_time("SELECT 1 FROM t AS OF SYSTEM TIME '-10s'");
    assert!(hit);
    assert_eq!(t.trim_end(), "SELECT 1 FROM t");
}

#[test]
fn parse_errors_do_not_carry_literal_values() {
    let a = analyzer().analyze("SELECT * FROM users WHERE region = 'eu' AND name = 'secret' 'x'");
    let err = a.statements[0]
        .template
        .parse_error
        .clone()
        .unwrap_or_default();
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn analyzer_is_shareable_across_sessions() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Analyzer>();
    send_sync::<Analysis>();
}

#[test]
fn cache_stays_within_its_bound() {
    let mut cfg = Config::parse(SEED).unwrap();
    cfg.proxy.analysis_cache_size = 32;
    let z = Analyzer::new(&cfg);
    for i in 0..2000 {
        // A different shape each time (the column name varies).
        z.analyze(&format!("SELECT c{i} FROM users WHERE region = 'eu'"));
    }
    assert!(z.cache.len() <= 32, "{}", z.cache.len());
    assert!(z.cache.len() >= 16);
}
