use super::*;
use crate::analyze::Analyzer;
use crate::config::Mode;

const SEED: &str = include_str!("../../tests/fixtures/seed.toml");

#[test]
fn warn_mode_forwards_rejections_with_a_warning_and_observe_forwards_all_locally() {
    let cfg = Config::parse(SEED).unwrap();
    let a = Analyzer::new(&cfg).analyze("SELECT * FROM notifications");
    let d = decide(
        &a,
        &Params::NONE,
        &NoTenants,
        &Settings::from_config(&cfg, None),
    );
    assert!(matches!(apply_mode(Mode::Enforce, &d), Effect::Refuse(_)));
    assert!(matches!(
        apply_mode(Mode::Warn, &d),
        Effect::Forward {
            region: None,
            warning: Some(_),
            ..
        }
    ));
    let r = decide(
        &Analyzer::new(&cfg).analyze("SELECT * FROM users WHERE region = 'us'"),
        &Params::NONE,
        &NoTenants,
        &Settings::from_config(&cfg, None),
    );
    assert_eq!(
        apply_mode(Mode::Observe, &r),
        Effect::Forward {
            region: None,
            rewritten: false,
            warning: None
        }
    );
    assert_eq!(
        apply_mode(Mode::Enforce, &r),
        Effect::Forward {
            region: Some("us".into()),
            rewritten: false,
            warning: None
        }
    );
}

#[test]
fn dollar_writes_any_parameter_number() {
    let mut buf = [0u8; 21];
    for k in [0, 1, 9, 10, 65_535, u64::from(u32::MAX), u64::MAX] {
        assert_eq!(crate::analyze::lex::dollar(k, &mut buf), format!("${k}"));
    }
}

/// A live session's settings skip the parameterised form of a rewrite
/// (it forwards the literal form only); the literal form is the same.
#[test]
fn live_settings_render_only_the_literal_form_of_a_rewrite() {
    let cfg = Config::parse(SEED).unwrap();
    let a = Analyzer::new(&cfg).analyze("SELECT * FROM users WHERE tenant_id = 7");
    let tenants: std::collections::HashMap<String, String> =
        [("7".to_string(), "eu".to_string())].into();
    let offline = Settings::from_config(&cfg, None);
    let mut live = offline.clone();
    live.parameterized_rewrites = false;
    let (o, l) = (
        decide(&a, &Params::NONE, &tenants, &offline).outcome,
        decide(&a, &Params::NONE, &tenants, &live).outcome,
    );
    let (
        Outcome::Rewrite {
            sql: osql,
            parameterized: Some(_),
            ..
        },
        Outcome::Rewrite {
            sql: lsql,
            parameterized: None,
            ..
        },
    ) = (&o, &l)
    else {
        panic!("expected rewrites, offline with a parameterised form: {o:?} / {l:?}");
    };
    assert_eq!(osql, lsql);
    assert!(lsql.contains("'eu'"), "{lsql}");
}
