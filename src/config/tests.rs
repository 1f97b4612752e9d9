use super::*;

const EXAMPLE: &str = include_str!("../../config/example.toml");

#[test]
fn design_example_loads() {
    let c = Config::parse(EXAMPLE).unwrap();
    assert_eq!(c.proxy.local_region, "eu");
    assert_eq!(c.proxy.mode, Mode::Enforce);
    assert_eq!(c.regions.len(), 3);
    assert_eq!(c.regions["eu"].fallback, vec!["us".to_string()]);
    assert_eq!(c.local_region().gateway.port, 5433);
    assert_eq!(c.tenants.as_ref().unwrap().refresh, Duration::from_secs(30));
    assert_eq!(c.table("PUBLIC.Users"), c.table("users"));
    assert!(matches!(c.table("plans"), Some(TableConfig::Global)));
    assert_eq!(c.table("nope"), None);
    let TableConfig::Regional(users) = c.table("users").unwrap() else {
        panic!()
    };
    assert_eq!(users.tenant_column.as_deref(), Some("tenant_id"));
    assert_eq!(users.on_missing_region, OnMissingRegion::Rewrite);
    assert_eq!(c.users["app"].auth, AuthMethod::ScramSha256);
    assert!(!format!("{:?}", c.users["app"]).contains("app-secret"));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
        [proxy]
        listen = "nowhere"
        local_region = "mars"
        mode = "yolo"
        startup_timeout = "soon"
        colour = "blue"
        [regions.eu]
        gateway = "http://x"
        fallback = ["eu", "moon"]
        [tables.users]
        tenant_column = "tenant_id"
        on_missing_region = "rewrite"
        [tables.plans]
        locality = "global"
        partition_column = "region"
        [[users]]
        name = "app"
    "#;
    let Err(ConfigError::Invalid { issues, .. }) = Config::parse(text) else {
        panic!("must fail")
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for expected in [
        "proxy.colour",
        "proxy.listen",
        "proxy.mode",
        "proxy.startup_timeout",
        "proxy.local_region",
        "regions.eu.gateway",
        "regions.eu.fallback[0]",
        "regions.eu.fallback[1]",
        "tables.users.partition_column",
        "tables.users.on_missing_region",
        "tables.plans.partition_column",
        "users[0].password",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
    }
}

#[test]
fn env_variables_are_substituted_and_missing_ones_reported() {
    let text = EXAMPLE
        .replace("app-secret", "${APP_PW}")
        .replace("geogate:secret", "geogate:${GW_PW}");
    let env = |k: &str| (k == "APP_PW").then(|| "from-env".to_string());
    let Err(ConfigError::Invalid { issues, .. }) = Config::parse_with_env(&text, "t", env) else {
        panic!()
    };
    assert_eq!(issues.len(), 3);
    assert!(issues.iter().all(|i| i.key == "${GW_PW}"));
    let env = |k: &str| Some(format!("v-{k}"));
    let c = Config::parse_with_env(&text, "t", env).unwrap();
    assert_eq!(c.users["app"].password, "v-APP_PW");
    assert_eq!(c.regions["us"].gateway.password.as_deref(), Some("v-GW_PW"));
    let escaped =
        Config::parse_with_env(&EXAMPLE.replace("app-secret", "a$${b}"), "t", |_| None).unwrap();
    assert_eq!(escaped.users["app"].password, "a${b}");
}

#[test]
fn bad_toml_is_a_syntax_error() {
    assert!(matches!(
        Config::parse("[proxy\nlisten="),
        Err(ConfigError::Syntax { .. })
    ));
    assert!(matches!(
        Config::parse("[proxy]\nmax_client_connections = \"many\""),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn worker_threads_defaults_to_one_and_must_be_positive() {
    let base = "[proxy]\nlocal_region = \"eu\"\n{}\n[regions.eu]\ngateway = \"postgres://h/db\"\n";
    let c = Config::parse(&base.replace("{}", "")).unwrap();
    assert_eq!(c.proxy.worker_threads, 1);
    let c = Config::parse(&base.replace("{}", "worker_threads = 4")).unwrap();
    assert_eq!(c.proxy.worker_threads, 4);
    let Err(ConfigError::Invalid { issues, .. }) =
        Config::parse(&base.replace("{}", "worker_threads = 0"))
    else {
        panic!("0 threads accepted")
    };
    assert_eq!(issues[0].key, "proxy.worker_threads");
}
