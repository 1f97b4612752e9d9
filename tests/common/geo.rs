//! Regions for a test: one database of the same name on each region's
//! cluster, seeded by the suite, and the gateway URLs geogate reaches them by.

use super::cluster::{Cluster, PASSWORD};

/// The regions of the shared three-region fixture, the local one (eu) first.
pub const REGIONS: [&str; 3] = ["eu", "us", "apac"];

/// One database per test on each region's cluster.
pub struct Geo {
    /// The database's name, the same on every cluster.
    pub db: String,
    clusters: Vec<(&'static str, &'static Cluster)>,
}

impl Geo {
    /// The shared clusters of eu, us and apac, each database seeded with
    /// `seed(region)` (the schema and that region's rows).
    pub fn new(prefix: &str, seed: impl Fn(&str) -> String) -> Geo {
        let clusters = REGIONS.iter().map(|r| (*r, Cluster::shared(r))).collect();
        Geo::with_clusters(prefix, clusters, seed)
    }

    /// As [`Geo::new`] on the clusters given, the local region's first.
    pub fn with_clusters(
        prefix: &str,
        clusters: Vec<(&'static str, &'static Cluster)>,
        seed: impl Fn(&str) -> String,
    ) -> Geo {
        let db = clusters[0].1.create_db(prefix);
        for (i, (region, c)) in clusters.iter().enumerate() {
            if i > 0 {
                c.psql("postgres", &format!("CREATE DATABASE {db}"));
            }
            c.psql(&db, &seed(region));
        }
        Geo { db, clusters }
    }

    /// The regions, the local one first.
    pub fn regions(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.clusters.iter().map(|(r, _)| *r)
    }

    /// The cluster behind `region`'s gateway.
    pub fn cluster(&self, region: &str) -> &'static Cluster {
        self.clusters.iter().find(|(r, _)| *r == region).unwrap().1
    }

    /// Runs SQL directly on a region's gateway (as a migration would).
    pub fn direct(&self, region: &str, sql: &str) -> String {
        self.cluster(region).psql(&self.db, sql)
    }

    /// Inserts `(id, region)` rows into the `tenant_directory` table on the
    /// local region's gateway, the directory geogate loads.
    pub fn directory<'a>(&self, tenants: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let rows: Vec<String> = tenants
            .into_iter()
            .map(|(id, r)| format!("('{id}', '{r}')"))
            .collect();
        self.clusters[0].1.psql(
            &self.db,
            &format!("INSERT INTO tenant_directory VALUES {}", rows.join(",")),
        );
    }

    /// `region`'s gateway URL, logging in as the scram superuser `geogate`.
    pub fn gateway(&self, region: &str) -> String {
        self.gateway_as(region, "geogate", Some(PASSWORD))
    }

    /// `region`'s gateway URL logging in as `user`.
    pub fn gateway_as(&self, region: &str, user: &str, password: Option<&str>) -> String {
        self.cluster(region).url(user, password, &self.db) + "?sslmode=disable"
    }

    /// A gateway URL to this database on a port nobody listens on.
    pub fn dead_gateway(&self) -> String {
        format!(
            "postgres://geogate:{PASSWORD}@127.0.0.1:{}/{}?sslmode=disable",
            super::free_port(),
            self.db
        )
    }
}
