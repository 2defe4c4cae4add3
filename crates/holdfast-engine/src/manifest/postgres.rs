//! PostgreSQL: counted from pg_dump's plain SQL.
//!
//! - Rows: the lines between `COPY <table> (...) FROM stdin;` and `\.` (COPY's text format
//!   escapes newlines inside values, so one line is one row).
//! - Objects: pg_dump writes an entry comment before each object,
//!   `-- Name: orders_pkey; Type: CONSTRAINT; Schema: public; Owner: app`; the kinds of the
//!   schema are counted, the data entries (`TABLE DATA`, `SEQUENCE SET`, ...) are not.
//! - Roles: the owners of those entries and the roles of `GRANT ... TO`, `REVOKE ... FROM`
//!   and `ALTER DEFAULT PRIVILEGES FOR ROLE`, which must exist before the dump restores.

use super::{FileTally, Lines, Tally, leading_ident};

#[derive(Default)]
pub(super) struct PgTally {
    lines: Lines,
    /// Inside a COPY block: the table and its rows so far.
    copy: Option<(String, u64)>,
    out: FileTally,
}

impl Tally for PgTally {
    fn feed(&mut self, buf: &[u8]) {
        let Self { lines, copy, out } = self;
        lines.feed(buf, |line| on_line(line, copy, out));
    }

    fn finish(mut self: Box<Self>) -> FileTally {
        if let Some(last) = self.lines.rest() {
            on_line(&last, &mut self.copy, &mut self.out);
        }
        if let Some((table, _)) = self.copy.take() {
            self.out
                .notes
                .push(format!("the data of {table} ends without its `\\.`"));
        }
        self.out
    }
}

fn on_line(line: &[u8], copy: &mut Option<(String, u64)>, out: &mut FileTally) {
    if let Some((_, rows)) = copy {
        if line == b"\\." {
            let (table, rows) = copy.take().expect("in a copy");
            *out.rows.entry(table).or_insert(0) += rows;
        } else {
            *rows += 1;
        }
        return;
    }
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    if let Some(rest) = line.strip_prefix("COPY ")
        && line.ends_with("FROM stdin;")
    {
        let (raw, _, _) = leading_ident(rest, '"');
        *copy = Some((raw.to_string(), 0));
    } else if let Some(rest) = line.strip_prefix("-- Name: ") {
        let field = |name: &str| {
            rest.split("; ")
                .find_map(|f| f.strip_prefix(name))
                .map(str::trim)
        };
        if let Some(kind) = field("Type: ").and_then(object_kind) {
            *out.objects.entry(kind.to_string()).or_insert(0) += 1;
        }
        if let Some(owner) = field("Owner: ")
            && !owner.is_empty()
            && owner != "-"
        {
            out.roles.insert(owner.to_string());
        }
    } else if line.starts_with("GRANT ") || line.starts_with("REVOKE ") {
        grantees(line, out);
    } else if let Some(rest) = line.strip_prefix("ALTER DEFAULT PRIVILEGES FOR ROLE ") {
        let (_, role, rest) = leading_ident(rest, '"');
        out.roles.insert(role);
        if let Some(i) = rest.find(" GRANT ").or_else(|| rest.find(" REVOKE ")) {
            grantees(rest[i + 1..].trim(), out);
        }
    }
}

/// The roles a `GRANT ... TO a, b` or `REVOKE ... FROM a` names (not `PUBLIC`).
fn grantees(line: &str, out: &mut FileTally) {
    let sep = if line.starts_with("GRANT") {
        " TO "
    } else {
        " FROM "
    };
    let Some(i) = line.rfind(sep) else { return };
    let mut list = line[i + sep.len()..].trim_end_matches(';');
    for tail in [" WITH GRANT OPTION", " WITH ADMIN OPTION", " CASCADE"] {
        list = list.strip_suffix(tail).unwrap_or(list);
    }
    if let Some(j) = list.find(" GRANTED BY ") {
        list = &list[..j];
    }
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (_, role, after) = leading_ident(rest, '"');
        if !role.is_empty() && role != "PUBLIC" {
            out.roles.insert(role);
        }
        rest = after.trim_start_matches([',', ' ', ';']);
        if rest == after {
            break;
        }
    }
}

/// The kinds of schema object counted, by the entry's `Type:`.
fn object_kind(t: &str) -> Option<&'static str> {
    Some(match t {
        "TABLE" => "table",
        "INDEX" => "index",
        "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" => "constraint",
        "FUNCTION" | "PROCEDURE" | "AGGREGATE" => "function",
        "TRIGGER" => "trigger",
        "VIEW" | "MATERIALIZED VIEW" => "view",
        "SEQUENCE" => "sequence",
        "SCHEMA" => "schema",
        "TYPE" | "DOMAIN" => "type",
        "EXTENSION" => "extension",
        "POLICY" => "policy",
        "RULE" => "rule",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
--
-- Name: orders; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.orders (
    id integer NOT NULL,
    note text
);

-- Name: Weird Table; Type: TABLE; Schema: public; Owner: postgres
CREATE TABLE public.\"Weird Table\" (x int);
-- Name: orders_id_seq; Type: SEQUENCE; Schema: public; Owner: app
-- Name: orders; Type: TABLE DATA; Schema: public; Owner: app
COPY public.orders (id, note) FROM stdin;
1\tone\\nline
2\t\\.not the end
3\t\\N
\\.

COPY public.\"Weird Table\" (x) FROM stdin;
\\.

-- Name: orders_id_seq; Type: SEQUENCE SET; Schema: public; Owner: app
-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: app
-- Name: orders orders_fk; Type: FK CONSTRAINT; Schema: public; Owner: app
-- Name: orders_note; Type: INDEX; Schema: public; Owner: app
-- Name: TABLE orders; Type: ACL; Schema: public; Owner: app
GRANT SELECT ON TABLE public.orders TO reader;
GRANT SELECT,INSERT ON TABLE public.orders TO \"Mixed Case\", writer WITH GRANT OPTION;
REVOKE ALL ON TABLE public.orders FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO auditor;
";

    fn tally(text: &str, split: usize) -> FileTally {
        let mut t: Box<dyn Tally> = Box::new(PgTally::default());
        for part in text.as_bytes().chunks(split) {
            t.feed(part);
        }
        t.finish()
    }

    #[test]
    fn rows_objects_and_roles_of_a_plain_dump_in_any_buffer_size() {
        for split in [1, 3, 7, 64, 100_000] {
            let t = tally(DUMP, split);
            assert_eq!(t.rows.get("public.orders"), Some(&3), "split {split}");
            assert_eq!(t.rows.get("public.\"Weird Table\""), Some(&0));
            assert_eq!(t.objects.get("table"), Some(&2));
            assert_eq!(t.objects.get("sequence"), Some(&1));
            assert_eq!(t.objects.get("constraint"), Some(&2));
            assert_eq!(t.objects.get("index"), Some(&1));
            let roles: Vec<&str> = t.roles.iter().map(String::as_str).collect();
            assert_eq!(
                roles,
                [
                    "Mixed Case",
                    "app",
                    "auditor",
                    "postgres",
                    "reader",
                    "writer"
                ]
            );
            assert!(t.notes.is_empty());
        }
    }

    #[test]
    fn a_copy_cut_short_is_noted() {
        let t = tally("COPY public.t (a) FROM stdin;\n1\n2\n", 5);
        assert!(t.rows.is_empty());
        assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
    }
}
