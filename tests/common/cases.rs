//! The decision table, read at run time from
//! `tests/fixtures/decision_cases.toml` (its header says what each field
//! means).

use serde::Deserialize;

/// The data file, from the repository root.
pub const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/decision_cases.toml"
);

/// One statement of the table and the decision expected for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub sql: String,
    pub user: Option<String>,
    /// Bind parameters as text, `None` for NULL.
    pub params: Vec<Option<String>>,
    /// The decision as `show` in tests/decisions.rs prints it.
    pub expect: String,
}

impl Case {
    /// The parameters as the analyzer's callers take them.
    pub fn params(&self) -> Vec<Option<&str>> {
        self.params.iter().map(Option::as_deref).collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    case: Vec<Raw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    sql: String,
    user: Option<String>,
    #[serde(default)]
    params: Vec<Param>,
    expect: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Param {
    Text(String),
    Null { null: bool },
}

/// Every case of the table, in the file's order.
pub fn decision_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(PATH).unwrap_or_else(|e| panic!("{PATH}: {e}"));
    parse(&text)
}

/// The cases of a table in the data file's format.
pub fn parse(text: &str) -> Vec<Case> {
    let file: File = toml::from_str(text).unwrap_or_else(|e| panic!("{PATH}: {e}"));
    file.case
        .into_iter()
        .map(|c| Case {
            params: c
                .params
                .into_iter()
                .map(|p| match p {
                    Param::Text(s) => Some(s),
                    Param::Null { null: true } => None,
                    Param::Null { null: false } => {
                        panic!("{}: a parameter is text or {{ null = true }}", c.sql)
                    }
                })
                .collect(),
            sql: c.sql,
            user: c.user,
            expect: c.expect,
        })
        .collect()
}
