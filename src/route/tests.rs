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

impl RouteObserver for Recorder {
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
    assert_eq!(NoGateway::SQLSTATE, "GG004");
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
async fn prober_brings_a_region_back_when_it_answers() {
    let h = Health::new(&regions(), None);
    let probe = Arc::new(TestProbe::default());
    let config = ProberConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = spawn_prober(h.clone(), probe.clone(), config, async move {
        let _ = stopped.await;
    });

    h.mark_down("eu");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!h.is_up("eu"), "does not answer yet");
    assert_eq!(h.choose("eu"), Ok(used("us", Some("eu"))));
    let probes_while_down = probe.probes.load(Ordering::SeqCst);
    assert!(probes_while_down >= 2, "probed every interval");

    probe.answering.lock().unwrap().insert("eu".into());
    tokio::time::sleep(config.interval).await;
    assert!(h.is_up("eu"));
    assert_eq!(h.choose("eu"), Ok(used("eu", None)), "traffic returns");

    // Up regions are not probed.
    let after = probe.probes.load(Ordering::SeqCst);
    tokio::time::sleep(config.interval * 3).await;
    assert_eq!(probe.probes.load(Ordering::SeqCst), after);

    stop.send(()).unwrap();
    task.await.unwrap();
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
    tokio::time::sleep(config.interval * 2 + config.timeout).await;
    assert!(h.is_up("us"));
    task.abort();
}
