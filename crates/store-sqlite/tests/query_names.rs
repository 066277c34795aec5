//! Both backends keep their longer statements in `queries/<area>/<name>.sql` under the same
//! names, so that a change to one side's statement leads to its twin. A statement only one
//! backend needs is listed here with the reason.

use std::collections::BTreeSet;
use std::path::Path;

/// Statements one backend has and the other does not need.
const ONLY_POSTGRES: &[(&str, &str)] = &[
    (
        "claim/start.sql",
        "opens a batch's attempts and marks its jobs running in one statement (a data-modifying \
         CTE); SQLite runs the same rows through prepared single-row statements",
    ),
    (
        "read/list_filters.sql",
        "the filters of one slice of the job list, put in both branches (finished and waiting \
         states) of PostgreSQL's one-statement list; SQLite reads each slice with a statement \
         of its own",
    ),
];
const ONLY_SQLITE: &[(&str, &str)] = &[(
    "claim/orgs.sql",
    "each organization's offer is read first; PostgreSQL reads it inside the candidates' \
     LATERAL join",
)];

fn statements(crate_dir: &str) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("queries");
    let mut found = BTreeSet::new();
    for area in std::fs::read_dir(&root).expect("queries/") {
        let area = area.unwrap().path();
        assert!(area.is_dir(), "{} is not in an area folder", area.display());
        for file in std::fs::read_dir(&area).unwrap() {
            let file = file.unwrap().path();
            assert_eq!(file.extension().and_then(|e| e.to_str()), Some("sql"));
            found.insert(format!(
                "{}/{}",
                area.file_name().unwrap().to_str().unwrap(),
                file.file_name().unwrap().to_str().unwrap()
            ));
        }
    }
    found
}

#[test]
fn both_backends_name_their_statements_alike() {
    let postgres = statements("store-postgres");
    let sqlite = statements("store-sqlite");
    let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> BTreeSet<String> {
        a.difference(b).cloned().collect()
    };
    let listed = |list: &[(&str, &str)]| list.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        only(&postgres, &sqlite),
        listed(ONLY_POSTGRES),
        "statements only PostgreSQL has"
    );
    assert_eq!(
        only(&sqlite, &postgres),
        listed(ONLY_SQLITE),
        "statements only SQLite has"
    );
    assert!(postgres.len() >= 7, "{postgres:?}");
}
