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

/// Bind values are decoded only for statements whose decision reads them.
#[test]
fn only_regional_predicates_and_moves_read_bind_parameters() {
    let z = analyzer();
    for (sql, reads) in [
        ("SELECT * FROM plans WHERE id = $1", false),
        ("SELECT * FROM users WHERE region = 'eu'", false),
        ("SELECT * FROM users WHERE tenant_id = $1", true),
        ("SELECT * FROM users WHERE region = $1 AND id = 2", true),
        (
            "UPDATE users SET region = $1 WHERE region = 'eu' AND id = 2",
            true,
        ),
        // The parameter is not in the statement with the regional table.
        (
            "SELECT $1::int; SELECT * FROM users WHERE region = 'eu'",
            false,
        ),
    ] {
        assert_eq!(z.analyze(sql).reads_params(), reads, "{sql}");
    }
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

/// The longest chains the operator limit lets through are analysed (and
/// rewritten) on a 2 MiB stack, the size of a tokio worker's.
#[test]
fn longest_allowed_and_or_chains_fit_a_worker_stack() {
    let z = Arc::new(analyzer());
    let per = 4; // operators per added term: "OR", "=", "AND", "="
    let n = MAX_OPERATORS / per - 2;
    let mut and_chain = String::from("SELECT * FROM users WHERE tenant_id = 1");
    let mut or_chain = String::from("SELECT * FROM users WHERE region = 'eu'");
    for i in 0..n {
        and_chain.push_str(&format!(" AND a{i} = 1 AND b = 2"));
        or_chain.push_str(&format!(" OR region = 'eu' AND c{i} = 2"));
    }
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let a = z.analyze(&and_chain);
            let b = z.analyze(&or_chain);
            (
                a.has_parse_error(),
                b.has_parse_error(),
                a.statements[0].template.rewritable(),
            )
        })
        .unwrap();
    let (a_err, b_err, rewritable) = handle.join().expect("no stack overflow");
    assert!(!a_err && !b_err);
    assert!(rewritable);
}

#[test]
fn tenant_ids_are_written_as_the_directory_writes_them() {
    let uuid = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";
    for written in [
        uuid,
        "0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "{0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9}",
        " 0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9 ",
        "0a1b-2c3d-4e5f-6071-8293-a4b5-c6d7-e8f9",
    ] {
        assert_eq!(canonical_tenant(written), uuid, "{written}");
    }
    for (written, canonical) in [
        ("42", "42"),
        ("+0042", "42"),
        ("-7", "-7"),
        ("-0", "0"),
        ("000", "0"),
        // Not a UUID: a hex digit too many, a foreign character, too long.
        (
            "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f90",
            "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f90",
        ),
        (
            "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8fg",
            "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8fg",
        ),
        ("acme", "acme"),
        ("é", "é"),
    ] {
        assert_eq!(canonical_tenant(written), canonical, "{written}");
    }
}
