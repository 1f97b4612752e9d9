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
    let mut buf = [0u8; 11];
    for k in [0, 1, 9, 10, 65_535, u32::MAX] {
        assert_eq!(dollar(k, &mut buf), format!("${k}"));
    }
}
