//! SQLite: counted from `sqlite3 .dump`, which writes one `INSERT INTO t VALUES(...);` line per
//! row (newlines inside values as `char(10)`) and each schema object as one `CREATE` statement.

use super::{FileTally, Lines, Tally, leading_ident};

#[derive(Default)]
pub(super) struct SqliteTally {
    lines: Lines,
    out: FileTally,
}

impl Tally for SqliteTally {
    fn feed(&mut self, buf: &[u8]) {
        let out = &mut self.out;
        self.lines.feed(buf, |line| on_line(line, out));
    }

    fn finish(mut self: Box<Self>) -> FileTally {
        if let Some(last) = self.lines.rest() {
            on_line(&last, &mut self.out);
        }
        self.out
    }
}

fn on_line(line: &[u8], out: &mut FileTally) {
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    if let Some(rest) = line.strip_prefix("INSERT INTO ") {
        let (_, table, _) = leading_ident(rest, '"');
        // `.dump` writes virtual tables into the schema table itself; those are schema.
        if !table.starts_with("sqlite_schema") && !table.starts_with("sqlite_master") {
            *out.rows.entry(table).or_insert(0) += 1;
        }
        return;
    }
    let kind = if line.starts_with("CREATE TABLE ") {
        "table"
    } else if line.starts_with("CREATE INDEX ") || line.starts_with("CREATE UNIQUE INDEX ") {
        "index"
    } else if line.starts_with("CREATE VIEW ") {
        "view"
    } else if line.starts_with("CREATE TRIGGER ") {
        "trigger"
    } else {
        return;
    };
    *out.objects.entry(kind.to_string()).or_insert(0) += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_per_table_and_objects_of_a_dump() {
        let dump = "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n\
            CREATE TABLE t(a, b);\nINSERT INTO t VALUES(1,'x');\n\
            INSERT INTO t VALUES(2,replace('a\\nb','\\n',char(10)));\n\
            CREATE TABLE \"we ird\"(x);\nINSERT INTO \"we ird\" VALUES(1);\n\
            CREATE INDEX ta ON t(a);\nCREATE VIEW v AS SELECT 1;\n\
            INSERT INTO sqlite_schema(type,name,tbl_name,rootpage,sql)VALUES('table','vt','vt',0,'x');\n\
            COMMIT;\n";
        let mut t: Box<dyn Tally> = Box::new(SqliteTally::default());
        for part in dump.as_bytes().chunks(9) {
            t.feed(part);
        }
        let t = t.finish();
        assert_eq!(t.rows.get("t"), Some(&2));
        assert_eq!(t.rows.get("we ird"), Some(&1));
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.objects.get("table"), Some(&2));
        assert_eq!(t.objects.get("index"), Some(&1));
        assert_eq!(t.objects.get("view"), Some(&1));
    }
}
