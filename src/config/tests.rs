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

/// The documented config of the example SaaS, and the copies deploy/ mounts.
const SHIPPED: &str = include_str!("../../config/geogate.toml");
const SHIPPED_K8S: &str = include_str!("../../deploy/kubernetes/base/geogate.toml");
const SHIPPED_COMPOSE: &str = include_str!("../../deploy/compose/geogate.toml");
const K8S_DEPLOYMENT: &str = include_str!("../../deploy/kubernetes/base/deployment.yaml");

#[test]
fn shipped_configs_load_with_secrets_and_region_from_the_environment_only() {
    const SECRETS: [&str; 3] = [
        "GEOGATE_GATEWAY_PASSWORD",
        "APP_DB_PASSWORD",
        "REPORTING_DB_PASSWORD",
    ];
    let env = |region: &'static str| {
        move |k: &str| match k {
            "GEOGATE_LOCAL_REGION" => Some(region.to_string()),
            _ if SECRETS.contains(&k) => Some(format!("pw-{k}")),
            _ => None,
        }
    };

    // Without an environment the only problems are the secrets (and the
    // passwords they leave empty): none is written in the file, and every
    // other key is valid.
    let Err(ConfigError::Invalid { issues, .. }) =
        Config::parse_with_env(SHIPPED, "config/geogate.toml", |_| None)
    else {
        panic!("config/geogate.toml must take its secrets from the environment")
    };
    let (mut missing, others): (Vec<&str>, Vec<&str>) = issues
        .iter()
        .map(|i| i.key.as_str())
        .partition(|k| k.starts_with("${"));
    assert!(
        others.iter().all(|k| k.ends_with(".password")),
        "{issues:?}"
    );
    missing.sort_unstable();
    missing.dedup();
    let mut expected: Vec<String> = SECRETS.iter().map(|s| format!("${{{s}}}")).collect();
    expected.sort_unstable();
    assert_eq!(missing, expected, "{issues:?}");

    let c = Config::parse_with_env(SHIPPED, "config/geogate.toml", env("eu"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.proxy.local_region, "eu");
    assert_eq!(c.regions.keys().collect::<Vec<_>>(), ["apac", "eu", "us"]);
    for (name, region) in &c.regions {
        let gw = &region.gateway;
        assert_eq!(gw.host, format!("cockroach-{name}.internal"));
        assert_eq!(gw.port, 26257);
        assert_eq!(gw.sslmode, SslMode::VerifyFull);
        assert_eq!(gw.sslrootcert.as_deref(), Some("/etc/geogate/ca.crt"));
        assert_eq!(gw.password.as_deref(), Some("pw-GEOGATE_GATEWAY_PASSWORD"));
    }
    assert!(
        c.regions["eu"].fallback.is_empty(),
        "EU rows are served by EU gateways only"
    );
    for table in ["tenants", "users", "documents"] {
        let Some(TableConfig::Regional(t)) = c.table(table) else {
            panic!("{table} must be regional")
        };
        assert_eq!(t.partition_column, "region");
        assert_eq!(t.on_missing_region, OnMissingRegion::Rewrite, "{table}");
    }
    let Some(TableConfig::Regional(notifications)) = c.table("notifications") else {
        panic!("notifications must be regional")
    };
    assert_eq!(notifications.on_missing_region, OnMissingRegion::Reject);
    assert_eq!(c.table("plans"), Some(&TableConfig::Global));
    assert_eq!(c.users["app"].password, "pw-APP_DB_PASSWORD");
    assert!(!c.users["app"].allow_scatter);
    assert!(c.users["reporting"].allow_scatter);
    // The keys shown commented out (client TLS, off by default) are real keys.
    let tls = SHIPPED
        .replace("# tls_cert = ", "tls_cert = ")
        .replace("# tls_key = ", "tls_key = ");
    let t = Config::parse_with_env(&tls, "config/geogate.toml", env("eu"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.proxy.tls_cert.is_none() && t.proxy.tls_cert.is_some() && t.proxy.tls_key.is_some());

    // Kubernetes stops the pod after terminationGracePeriodSeconds: open
    // transactions must get their shutdown_grace before that.
    let grace: u64 = K8S_DEPLOYMENT
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("deployment.yaml sets terminationGracePeriodSeconds");
    assert!(c.proxy.shutdown_grace < Duration::from_secs(grace));

    // The Kubernetes copy is the same config with the region from the
    // environment; the compose copy loads for every region.
    let users = |c: &Config| -> BTreeMap<String, String> {
        c.users
            .iter()
            .map(|(n, u)| (n.clone(), format!("{u:?}")))
            .collect()
    };
    for region in ["eu", "us", "apac"] {
        let k = Config::parse_with_env(SHIPPED_K8S, "k8s", env(region))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.proxy.local_region, region);
        let mut k_proxy = k.proxy.clone();
        k_proxy.local_region = c.proxy.local_region.clone();
        assert_eq!(format!("{k_proxy:?}"), format!("{:?}", c.proxy));
        assert_eq!(format!("{:?}", k.regions), format!("{:?}", c.regions));
        assert_eq!(format!("{:?}", k.tenants), format!("{:?}", c.tenants));
        assert_eq!(k.tables, c.tables);
        assert_eq!(users(&k), users(&c));

        let d = Config::parse_with_env(SHIPPED_COMPOSE, "compose", env(region))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.proxy.local_region, region);
    }
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

#[test]
fn tls_mode_defaults_to_allow_and_require_needs_a_certificate() {
    let base =
        "[proxy]\nlocal_region = \"eu\"\n{extra}\n[regions.eu]\ngateway = \"postgres://h/db\"\n";
    let parse = |extra: &str| Config::parse(&base.replace("{extra}", extra));
    assert_eq!(parse("").unwrap().proxy.tls_mode, TlsMode::Allow);
    let with_cert = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
    let c = parse(&format!("{with_cert}tls_mode = \"require\"")).unwrap();
    assert_eq!(c.proxy.tls_mode, TlsMode::Require);
    let Err(ConfigError::Invalid { issues, .. }) = parse("tls_mode = \"require\"") else {
        panic!("require without a certificate must fail")
    };
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "proxy.tls_mode");
    let Err(ConfigError::Invalid { issues, .. }) =
        parse(&format!("{with_cert}tls_mode = \"always\""))
    else {
        panic!("an unknown tls_mode must fail")
    };
    assert_eq!(issues[0].key, "proxy.tls_mode");
}

#[test]
fn unknown_keys_are_named_as_written_with_the_key_meant() {
    let text = r#"
        [proxi]
        [proxy]
        local_region = "eu"
        mdoe = "warn"
        colour = "blue"
        [regions.eu]
        gatway = "postgres://h/db"
        gateway = "postgres://h/db"
        [tenants]
        query = "SELECT 1, 2"
        refrsh = "30s"
        [tables.users]
        partition_col = "region"
        partition_column = "region"
        [[users]]
        name = "app"
        password = "pw"
        pasword = "pw"
    "#;
    let Err(ConfigError::Invalid { issues, .. }) = Config::parse(text) else {
        panic!("unknown keys must fail")
    };
    let got: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    for expected in [
        "proxi: unknown key; did you mean `proxy`?",
        "proxy.mdoe: unknown key; did you mean `mode`?",
        "proxy.colour: unknown key",
        "regions.eu.gatway: unknown key; did you mean `gateway`?",
        "tenants.refrsh: unknown key; did you mean `refresh`?",
        "tables.users.partition_col: unknown key; did you mean `partition_column`?",
        "users[0].pasword: unknown key; did you mean `password`?",
    ] {
        assert!(
            got.iter().any(|g| g == expected),
            "{expected:?} not in {got:#?}"
        );
    }
    assert_eq!(got.len(), 7, "{got:#?}");
}

#[test]
fn enum_errors_show_the_bad_value_and_the_accepted_ones() {
    let text = r#"
        [proxy]
        local_region = "eu"
        mode = "enforcing"
        [regions.eu]
        gateway = "postgres://h/db?sslmode=verify_full"
        [tables.users]
        partition_column = "region"
        on_missing_region = "scatter"
    "#;
    let Err(ConfigError::Invalid { issues, .. }) = Config::parse(text) else {
        panic!("bad values must fail")
    };
    let got: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        got,
        [
            "proxy.mode: must be one of \"enforce\", \"warn\", \"observe\", not \"enforcing\"",
            "regions.eu.gateway: gateway URL has an invalid sslmode \"verify_full\" (expected disable, allow, prefer, require, verify-ca or verify-full)",
            "tables.users.on_missing_region: must be one of \"rewrite\", \"reject\", \"allow\", not \"scatter\"",
        ]
    );
}

#[test]
fn offline_loading_reads_unset_secrets_as_a_placeholder_with_one_warning_each() {
    let (c, warnings) = Config::parse_offline(SHIPPED, "config/geogate.toml", |_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "${APP_DB_PASSWORD}",
            "${GEOGATE_GATEWAY_PASSWORD}",
            "${REPORTING_DB_PASSWORD}"
        ]
    );
    assert!(warnings[0].message.contains("not set"), "{warnings:?}");
    assert_eq!(c.users["app"].password, UNSET_OFFLINE);
    assert_eq!(
        c.regions["eu"].gateway.password.as_deref(),
        Some(UNSET_OFFLINE)
    );
    // A set variable is used as it is, and then nothing is warned about.
    let (c, warnings) = Config::parse_offline(SHIPPED, "t", |k| Some(format!("v-{k}"))).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(c.users["app"].password, "v-APP_DB_PASSWORD");
    // The same file still fails for `serve`, which would connect.
    assert!(Config::parse_with_env(SHIPPED, "t", |_| None).is_err());
}

#[test]
fn offline_loading_that_still_fails_names_the_unset_variables_too() {
    let Err(ConfigError::Invalid { issues, .. }) =
        Config::parse_offline(SHIPPED_K8S, "k8s", |_| None)
    else {
        panic!("an unset local region cannot be guessed")
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert!(keys.contains(&"${GEOGATE_LOCAL_REGION}"), "{keys:?}");
    assert!(keys.contains(&"proxy.local_region"), "{keys:?}");
}

#[test]
fn tenant_move_keys_are_read_with_their_defaults_and_checked() {
    let base = |tenants: &str| {
        format!(
            r#"
        [proxy]
        listen = "127.0.0.1:6432"
        local_region = "eu"
        [regions.eu]
        gateway = "postgres://g@h/app"
        [tenants]
        query = "SELECT id::text, region::text FROM tenants"
        {tenants}
        [[users]]
        name = "app"
        password = "x"
    "#
        )
    };
    let m = Config::parse(&base("")).unwrap().tenants.unwrap().moves;
    assert_eq!(m.table.as_deref(), Some("tenants"));
    assert_eq!(
        (m.id_column.as_str(), m.region_column.as_str()),
        ("id", "region")
    );
    assert_eq!(
        m.guard,
        WriteGuard::Off,
        "a guessed table does not turn the guard on"
    );
    assert_eq!(m.listen.as_deref(), Some("geogate_tenants"));
    assert_eq!(m.changes_query, None);

    let m = Config::parse(&base(
        "table = \"dir\"\nid_column = \"tid\"\nlisten = \"\"\nchanges_query = \"SELECT 1\"\npoll_interval = \"250ms\"",
    ))
    .unwrap()
    .tenants
    .unwrap()
    .moves;
    assert_eq!(m.table.as_deref(), Some("dir"));
    assert_eq!(m.id_column, "tid");
    assert_eq!(m.guard, WriteGuard::Share);
    assert_eq!(m.listen, None);
    assert_eq!(m.changes_query.as_deref(), Some("SELECT 1"));
    assert_eq!(m.poll_interval, Duration::from_millis(250));

    let Err(ConfigError::Invalid { issues, .. }) =
        Config::parse(&base("guard = \"maybe\"\npoll_interval = \"soon\""))
    else {
        panic!("must fail")
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert!(keys.contains(&"tenants.guard"), "{keys:?}");
    assert!(keys.contains(&"tenants.poll_interval"), "{keys:?}");
}
