//! SQLite checks a partial index's predicate for the old and the new version of every row a
//! write changes, and evaluates an `IN` list of more than two constants through a temporary
//! b-tree that it builds anew on each execution. With such predicates on the list indexes,
//! every change of a job's state built six of them and the drain ran 30 % slower (migration
//! 0014). This test keeps every write to a table with a partial index free of them.

use retryd_store_sqlite::{SqliteStore, Synchronous};

/// The opcodes of `sql`'s program, by name.
fn opcodes(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
    stmt.query_map([], |row| row.get::<_, String>(1))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn writes_to_tables_with_partial_indexes_build_no_temporary_b_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("predicates.db");
    // Opening the store applies every migration.
    drop(SqliteStore::open(&path, Synchronous::Normal).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare(
            "SELECT DISTINCT tbl_name FROM sqlite_master \
             WHERE type = 'index' AND sql LIKE '%WHERE%' ORDER BY tbl_name",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(
        tables.iter().any(|t| t == "jobs"),
        "the jobs table has partial indexes: {tables:?}"
    );
    for table in &tables {
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // Every column written: every partial index's predicate is evaluated, for the old
        // row and the new one.
        let set = columns
            .iter()
            .map(|c| format!("{c} = {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let values = vec!["NULL"; columns.len()].join(", ");
        for sql in [
            format!("UPDATE {table} SET {set} WHERE rowid = 1"),
            format!(
                "INSERT INTO {table} ({}) VALUES ({values})",
                columns.join(", ")
            ),
        ] {
            let ephemeral = opcodes(&conn, &sql)
                .iter()
                .filter(|op| *op == "OpenEphemeral")
                .count();
            assert_eq!(
                ephemeral, 0,
                "{sql}: {ephemeral} temporary b-tree(s); an index predicate on {table} has an \
                 IN list of more than two constants (write it as comparisons joined by OR)"
            );
        }
    }
}
