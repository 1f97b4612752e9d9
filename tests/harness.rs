//! Pins the test harness itself: clusters start, roles authenticate as
//! documented, and owned clusters stop and restart.

mod common;

use common::{Cluster, PASSWORD};

#[test]
fn shared_cluster_serves_isolated_databases_and_the_documented_roles() {
    let c = Cluster::shared("harness");
    let db = c.create_db("harness");
    c.psql(&db, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)");
    assert_eq!(c.psql(&db, "SELECT sum(x) FROM t"), "3");
    assert_eq!(c.psql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname IN ('geogate','md5_user','clear_user','trust_user')"), "4");
    let methods = c.psql("postgres", "SELECT rolname || ':' || left(rolpassword, 3) FROM pg_authid WHERE rolname IN ('geogate','md5_user') ORDER BY 1");
    assert_eq!(methods, "geogate:SCR\nmd5_user:md5");
    // A wrong password is refused over TCP for a scram role: pg_hba is in force.
    let out = std::process::Command::new("psql")
        .args(["-X", "-t", "-A", "-c", "SELECT 1"])
        .arg(c.url("geogate", Some("wrong"), &db))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = std::process::Command::new("psql")
        .args(["-X", "-t", "-A", "-c", "SELECT current_user"])
        .arg(c.url("geogate", Some(PASSWORD), &db))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "geogate");
}

#[test]
fn owned_cluster_stops_and_restarts_keeping_data() {
    let c = Cluster::start_owned("restart");
    c.psql(
        "postgres",
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)",
    );
    c.stop();
    assert!(!c.psql_output("postgres", "SELECT 1").status.success());
    c.start();
    assert_eq!(c.psql("postgres", "SELECT x FROM kept"), "7");
}
