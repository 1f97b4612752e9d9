//! Failover choice and recovery, over a probe the test controls.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::config::{Config, RegionConfig};

/// eu → [us, apac], us → [eu], apac → (none).
fn regions() -> BTreeMap<String, RegionConfig> {
    Config::parse(
        r#"
        [proxy]
        listen = "127.0.0.1:6432"
        local_region = "eu"
        [regions.eu]
        gateway = "postgres://g@127.0.0.1:5433/app"
        fallback = ["us", "apac"]
        [regions.us]
        gateway = "postgres://g@127.0.0.1:5434/app"
        fallback = ["eu"]
        [regions.apac]
        gateway = "postgres://g@127.0.0.1:5435/app"
        [[users]]
        name = "app"
        password = "x"
        "#,
    )
    .expect("test config is valid")
    .regions
}

#[derive(Default)]
struct Recorder {
    up: Mutex<Vec<(String, bool)>>,
    failovers: Mutex<Vec<(String, String)>>,
}

impl HealthObserver for Recorder {
    fn on_upstream_up(&self, region: &str, up: bool) {
        self.up.lock().unwrap().push((region.into(), up));
    }
    fn on_failover(&self, from: &str, to: &str) {
        self.failovers
            .lock()
            .unwrap()
            .push((from.into(), to.into()));
    }
}

/// Answers for the regions in `answering`; counts probes.
#[derive(Default)]
struct TestProbe {
    answering: Mutex<HashSet<String>>,
    probes: AtomicUsize,
    hang: Mutex<bool>,
}

impl Probe for TestProbe {
    fn probe<'a>(&'a self, region: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            self.probes.fetch_add(1, Ordering::SeqCst);
            if *self.hang.lock().unwrap() {
                std::future::pending::<()>().await;
            }
            self.answering.lock().unwrap().contains(region)
        })
    }
}

fn used(region: &str, from: Option<&str>) -> Choice {
    Choice {
        region_used: region.into(),
        failed_over_from: from.map(Into::into),
    }
}

#[test]
fn up_region_serves_itself() {
    let h = Health::new(&regions(), None);
    assert_eq!(h.choose("eu"), Ok(used("eu", None)));
    assert!(h.is_up("apac"));
}

#[test]
fn down_region_fails_over_to_its_first_up_fallback() {
    let rec = Arc::new(Recorder::default());
    let h = Health::new(&regions(), Some(rec.clone()));
    assert!(h.mark_down("eu"));
    assert!(!h.mark_down("eu"), "second mark is not a transition");
    assert_eq!(h.choose("eu"), Ok(used("us", Some("eu"))));
    assert_eq!(h.choose("us"), Ok(used("us", None)), "others untouched");
    assert_eq!(
        *rec.failovers.lock().unwrap(),
        vec![("eu".to_string(), "us".to_string())]
    );
    let ups = rec.up.lock().unwrap();
    assert_eq!(
        ups.iter().filter(|(_, up)| *up).count(),
        3,
        "initial states"
    );
    assert_eq!(ups.last(), Some(&("eu".to_string(), false)));
}

#[test]
fn chained_fallbacks_skip_a_fallback_that_is_down_too() {
    let h = Health::new(&regions(), None);
    h.mark_down("eu");
    h.mark_down("us");
    assert_eq!(h.choose("eu"), Ok(used("apac", Some("eu"))));
}

#[test]
fn fallbacks_are_not_followed_transitively() {
    // us → [eu] only; eu → [us, apac]. With us and eu down, us may not
    // reach apac through eu's list.
    let h = Health::new(&regions(), None);
    h.mark_down("eu");
    h.mark_down("us");
    let err = h.choose("us").unwrap_err();
    assert_eq!(err.tried, vec!["us".to_string(), "eu".to_string()]);
}

#[test]
fn nothing_up_is_no_gateway() {
    let h = Health::new(&regions(), None);
    for r in ["eu", "us", "apac"] {
        h.mark_down(r);
    }
    let err = h.choose("eu").unwrap_err();
    assert_eq!(err.region, "eu");
    assert!(err.to_string().contains("us, apac"), "{err}");
    // A region with no fallback list.
    assert!(h.choose("apac").is_err());
}

#[test]
fn unknown_region_is_no_gateway_and_marks_are_ignored() {
    let h = Health::new(&regions(), None);
    assert!(!h.mark_down("mars"));
    assert!(!h.is_up("mars"));
    assert!(h.choose("mars").unwrap_err().tried.is_empty());
}

#[tokio::test(start_paused = true)]
async fn prober_brings_a_region_back_after_consecutive_successes() {
    let h = Health::new(&regions(), None);
    let probe = Arc::new(TestProbe::default());
    probe
        .answering
        .lock()
        .unwrap()
        .extend(["us".to_string(), "apac".to_string()]);
    let config = ProberConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = spawn_prober(h.clone(), probe.clone(), config, async move {
        let _ = stopped.await;
    });

    h.connect_failed("eu");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!h.is_up("eu"), "does not answer yet");
    assert_eq!(h.choose("eu"), Ok(used("us", Some("eu"))));
    assert!(
        probe.probes.load(Ordering::SeqCst) >= 6,
        "every region probed every interval"
    );

    probe.answering.lock().unwrap().insert("eu".into());
    tokio::time::sleep(config.interval).await;
    assert!(
        !h.is_up("eu"),
        "one success is not enough (successes_up = 2)"
    );
    tokio::time::sleep(config.interval).await;
    assert!(h.is_up("eu"));
    assert_eq!(h.choose("eu"), Ok(used("eu", None)), "traffic returns");

    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn prober_marks_a_confirmed_region_down_after_consecutive_failures_only() {
    let h = Health::new(&regions(), None);
    let probe = Arc::new(TestProbe::default());
    probe.answering.lock().unwrap().extend([
        "eu".to_string(),
        "us".to_string(),
        "apac".to_string(),
    ]);
    let config = ProberConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
    };
    let task = spawn_prober(h.clone(), probe.clone(), config, std::future::pending());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    probe.answering.lock().unwrap().remove("us");
    tokio::time::sleep(config.interval).await;
    assert!(
        h.is_up("us"),
        "one failed probe is not enough (failures_down = 2)"
    );
    tokio::time::sleep(config.interval).await;
    assert!(!h.is_up("us"));
    assert!(h.is_up("eu") && h.is_up("apac"), "others untouched");
    task.abort();
}

#[test]
fn a_region_goes_down_only_after_consecutive_failed_probes_even_before_its_first_answer() {
    let h = Health::new(&regions(), None);
    assert!(
        !h.probe_result("apac", false),
        "one slow first probe is not enough"
    );
    assert!(h.probe_result("apac", false), "down after two failures");
    assert!(!h.probe_result("apac", true));
    assert!(h.probe_result("apac", true), "back after two successes");
}

#[test]
fn failed_probes_of_a_gateway_answering_sessions_are_not_counted() {
    let h = Health::new(&regions(), None);
    let eu = h.liveness("eu").expect("configured");
    assert!(h.liveness("mars").is_none());
    // Sessions are being answered: a slow probe does not take eu down.
    for _ in 0..5 {
        eu.saw_answer();
        assert!(!h.probe_result("eu", false));
        assert!(h.is_up("eu"), "serving, only slow");
    }
    // The answers stop: the mark is used up by one result, then the
    // failures count as usual (two in a row).
    eu.saw_answer();
    assert!(
        !h.probe_result("eu", false),
        "answered since the last probe"
    );
    assert!(
        !h.probe_result("eu", false),
        "first failure without answers"
    );
    assert!(h.probe_result("eu", false), "down after two");
    // A down region comes back on probes only, whatever the sessions saw.
    eu.saw_answer();
    assert!(!h.probe_result("eu", false));
    assert!(!h.is_up("eu"));
    assert!(!h.probe_result("eu", true));
    assert!(h.probe_result("eu", true), "back after two successes");
}

#[test]
fn a_session_signal_marks_down_at_once_and_the_region_must_earn_its_return() {
    let thresholds = Thresholds {
        failures_down: 3,
        successes_up: 3,
    };
    let h = Health::with_thresholds(&regions(), thresholds, None);
    assert!(!h.probe_result("us", true), "already up");
    assert!(h.connection_lost("us"));
    assert!(
        !h.connection_lost("us"),
        "second signal is not a transition"
    );
    assert!(!h.probe_result("us", true));
    assert!(!h.probe_result("us", true));
    assert!(h.probe_result("us", true), "third success in a row");
    assert!(h.connect_failed("us"));
    assert!(
        !h.probe_result("us", true),
        "streak restarted by the signal"
    );
}

#[test]
fn readiness_question_is_whether_the_region_or_a_fallback_is_up() {
    let h = Health::new(&regions(), None);
    h.connect_failed("apac");
    assert!(!h.serves("apac"), "apac has no fallback");
    h.connect_failed("eu");
    assert!(h.serves("eu"), "us serves eu");
    h.connect_failed("us");
    assert!(!h.serves("eu"), "apac is down too");
    assert!(!h.serves("mars"));
}

/// A connection attempt that fails per region as the test says.
fn attempt(
    outcome: &'static [(&'static str, Result<u32, Attempt<&'static str>>)],
    log: Arc<Mutex<Vec<String>>>,
) -> impl FnMut(String) -> std::future::Ready<Result<u32, Attempt<&'static str>>> {
    move |region: String| {
        log.lock().unwrap().push(region.clone());
        let (_, r) = outcome.iter().find(|(r, _)| *r == region).unwrap();
        std::future::ready(match r {
            Ok(n) => Ok(*n),
            Err(Attempt::Unreachable(e)) => Err(Attempt::Unreachable(*e)),
            Err(Attempt::Refused(e)) => Err(Attempt::Refused(*e)),
        })
    }
}

#[tokio::test]
async fn open_with_failover_skips_unreachable_regions_and_marks_them_down() {
    static OUTCOME: [(&str, Result<u32, Attempt<&str>>); 3] = [
        ("eu", Err(Attempt::Unreachable("refused"))),
        ("us", Err(Attempt::Unreachable("timeout"))),
        ("apac", Ok(3)),
    ];
    let h = Health::new(&regions(), None);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (choice, n) = h
        .open_with_failover("eu", attempt(&OUTCOME, log.clone()))
        .await
        .unwrap();
    assert_eq!((choice, n), (used("apac", Some("eu")), 3));
    assert_eq!(*log.lock().unwrap(), ["eu", "us", "apac"]);
    assert_eq!(h.down_regions(), ["eu", "us"]);
}

#[tokio::test]
async fn open_with_failover_ends_on_a_refusal_without_marking_anything() {
    static OUTCOME: [(&str, Result<u32, Attempt<&str>>); 1] =
        [("eu", Err(Attempt::Refused("28P01 for this user")))];
    let h = Health::new(&regions(), None);
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = h
        .open_with_failover("eu", attempt(&OUTCOME, log.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Session("28P01 for this user")));
    assert!(h.down_regions().is_empty());
}

#[tokio::test]
async fn open_with_failover_tries_each_region_once_then_reports_gg004() {
    static OUTCOME: [(&str, Result<u32, Attempt<&str>>); 2] = [
        ("us", Err(Attempt::Unreachable("refused"))),
        ("eu", Err(Attempt::Unreachable("refused"))),
    ];
    let h = Health::new(&regions(), None);
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = h
        .open_with_failover("us", attempt(&OUTCOME, log.clone()))
        .await
        .unwrap_err();
    let OpenError::NoGateway { error, last } = err else {
        panic!("expected NoGateway")
    };
    assert_eq!(error.tried, ["us", "eu"]);
    assert_eq!(last, Some("refused"), "the last gateway's answer is kept");
    assert_eq!(*log.lock().unwrap(), ["us", "eu"]);
}

#[tokio::test]
async fn open_with_failover_tries_a_region_marked_down_once_when_nothing_is_up() {
    static OUTCOME: [(&str, Result<u32, Attempt<&str>>); 1] = [("apac", Ok(7))];
    let h = Health::new(&regions(), None);
    h.connect_failed("apac");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (choice, n) = h
        .open_with_failover("apac", attempt(&OUTCOME, log.clone()))
        .await
        .unwrap();
    assert_eq!((choice, n), (used("apac", None), 7));
    assert!(
        !h.is_up("apac"),
        "one connection does not bring it back: the prober does"
    );
    // Still down: the gateway's own answer comes back, tried once.
    static DOWN: [(&str, Result<u32, Attempt<&str>>); 1] =
        [("apac", Err(Attempt::Unreachable("28P01 for geogate")))];
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = h
        .open_with_failover("apac", attempt(&DOWN, log.clone()))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        OpenError::NoGateway {
            last: Some("28P01 for geogate"),
            ..
        }
    ));
    assert_eq!(*log.lock().unwrap(), ["apac"]);
}

#[tokio::test]
async fn open_with_failover_for_an_unknown_region_tries_nothing() {
    static OUTCOME: [(&str, Result<u32, Attempt<&str>>); 0] = [];
    let h = Health::new(&regions(), None);
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = h
        .open_with_failover("mars", attempt(&OUTCOME, log.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::NoGateway { last: None, .. }));
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hanging_probe_counts_as_failed_and_does_not_stop_the_prober() {
    let h = Health::new(&regions(), None);
    let probe = Arc::new(TestProbe::default());
    *probe.hang.lock().unwrap() = true;
    probe.answering.lock().unwrap().insert("us".into());
    let config = ProberConfig::default();
    let task = spawn_prober(h.clone(), probe.clone(), config, std::future::pending());
    h.mark_down("us");
    tokio::time::sleep(config.interval * 3).await;
    assert!(!h.is_up("us"));
    *probe.hang.lock().unwrap() = false;
    tokio::time::sleep((config.interval + config.timeout) * 3).await;
    assert!(h.is_up("us"));
    task.abort();
}

#[test]
fn readiness_following_health_stays_ready_while_a_fallback_serves_the_local_region() {
    use crate::metrics::http::Readiness;
    let health = Health::new(&regions(), None);
    let r = Readiness::new(false);
    r.set_config_loaded(true);
    let h = health.clone();
    r.follow_gateways(move || h.serves("eu"), health.has_fallback("eu"));
    assert_eq!(r.check(), Ok(()));
    health.connect_failed("eu");
    assert_eq!(r.check(), Ok(()), "us serves eu");
    health.connect_failed("us");
    assert_eq!(r.check(), Ok(()), "apac serves eu");
    health.connect_failed("apac");
    assert_eq!(
        r.check(),
        Err("local gateway and its fallbacks unreachable")
    );
    health.mark_up("us");
    assert_eq!(r.check(), Ok(()));
}
