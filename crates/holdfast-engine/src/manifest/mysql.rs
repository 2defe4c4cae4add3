//! MariaDB/MySQL: counted from mariadb-dump's SQL.
//!
//! - Rows: the tuples of each `INSERT INTO \`t\` VALUES (...),(...);` (MariaDB 10.11 puts each
//!   tuple on a line of its own, older dumps all on one). mariadb-dump escapes quotes and
//!   newlines inside strings with a backslash and writes binary data as hex, so outside a
//!   string every `(` opens a tuple and the first `;` ends the statement. A statement can be
//!   megabytes long: it is scanned where it passes, never held.
//! - Objects: tables, views, triggers, routines and events of the schema.

use super::{FileTally, LINE_CAP, Tally, leading_ident};

#[derive(Default)]
pub(super) struct MysqlTally {
    /// The start of the current line, while it may still be a statement worth reading.
    head: Vec<u8>,
    state: State,
    out: FileTally,
}

#[derive(Default)]
enum State {
    /// At the start of a line, collecting its head.
    #[default]
    Head,
    /// In the VALUES of an INSERT into `table`.
    Values {
        table: String,
        in_string: bool,
        escaped: bool,
    },
    /// In a line of no interest, up to its end.
    Skip,
}

const INSERT: &[u8] = b"INSERT INTO ";

impl Tally for MysqlTally {
    fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            buf = match &mut self.state {
                State::Head => self.head_bytes(buf),
                State::Values {
                    table,
                    in_string,
                    escaped,
                } => {
                    let (rows, rest, ended) = scan_values(buf, in_string, escaped);
                    *self.out.rows.entry(table.clone()).or_insert(0) += rows;
                    if ended {
                        // The rest of the statement's line.
                        self.state = State::Skip;
                    }
                    rest
                }
                State::Skip => match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        self.state = State::Head;
                        &buf[i + 1..]
                    }
                    None => &[],
                },
            };
        }
    }

    fn finish(mut self: Box<Self>) -> FileTally {
        if let State::Values { table, .. } = &self.state {
            let note = format!("the INSERT into {table} is cut short");
            self.out.notes.push(note);
        } else if matches!(self.state, State::Head) && !self.head.is_empty() {
            let head = std::mem::take(&mut self.head);
            schema_line(&head, &mut self.out);
        }
        self.out
    }
}

impl MysqlTally {
    /// Collects the head of a line; returns what is left of `buf` once the line is classified.
    fn head_bytes<'a>(&mut self, buf: &'a [u8]) -> &'a [u8] {
        let nl = memchr::memchr(b'\n', buf);
        let end = nl.unwrap_or(buf.len());
        let take = end.min(LINE_CAP.saturating_sub(self.head.len()));
        self.head.extend_from_slice(&buf[..take]);
        // An INSERT: its values start after ` VALUES`, on this line or the next ones.
        if self.head.starts_with(INSERT) {
            let rest = String::from_utf8_lossy(&self.head[INSERT.len()..]).into_owned();
            let (_, table, after) = leading_ident(&rest, '`');
            if let Some(values) = after.strip_prefix(" VALUES") {
                let (mut in_string, mut escaped) = (false, false);
                let (rows, _, ended) = scan_values(values.as_bytes(), &mut in_string, &mut escaped);
                *self.out.rows.entry(table.clone()).or_insert(0) += rows;
                self.head.clear();
                self.state = if ended {
                    State::Skip
                } else {
                    State::Values {
                        table,
                        in_string,
                        escaped,
                    }
                };
                return &buf[take..];
            }
            if nl.is_none() && self.head.len() < LINE_CAP {
                return &[];
            }
        }
        match nl {
            Some(i) if take == end => {
                let head = std::mem::take(&mut self.head);
                schema_line(&head, &mut self.out);
                &buf[i + 1..]
            }
            _ if self.head.len() >= LINE_CAP => {
                // Too long for a schema line of interest: its head is all that is looked at.
                let head = std::mem::take(&mut self.head);
                schema_line(&head, &mut self.out);
                self.state = State::Skip;
                &buf[take..]
            }
            _ => &[],
        }
    }
}

/// Scans INSERT values: (tuples opened, what follows the statement's `;`, whether it ended).
fn scan_values<'a>(
    buf: &'a [u8],
    in_string: &mut bool,
    escaped: &mut bool,
) -> (u64, &'a [u8], bool) {
    let mut rows = 0;
    let mut i = 0;
    while i < buf.len() {
        if *escaped {
            *escaped = false;
            i += 1;
            continue;
        }
        if *in_string {
            match memchr::memchr2(b'\\', b'\'', &buf[i..]) {
                Some(j) => {
                    if buf[i + j] == b'\\' {
                        *escaped = true;
                    } else {
                        *in_string = false;
                    }
                    i += j + 1;
                }
                None => return (rows, &[], false),
            }
        } else {
            match memchr::memchr3(b'(', b'\'', b';', &buf[i..]) {
                Some(j) => {
                    match buf[i + j] {
                        b'(' => rows += 1,
                        b'\'' => *in_string = true,
                        _ => return (rows, &buf[i + j + 1..], true),
                    }
                    i += j + 1;
                }
                None => return (rows, &[], false),
            }
        }
    }
    (rows, &[], false)
}

/// Counts the schema object a line of the dump creates, if any.
fn schema_line(line: &[u8], out: &mut FileTally) {
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let kind = if line.starts_with("CREATE TABLE `") {
        "table"
    } else if line.starts_with("/*!50001 VIEW `") {
        "view"
    } else if line.contains("/*!50003 TRIGGER ") {
        "trigger"
    } else if line.starts_with("CREATE ")
        && (line.contains(" PROCEDURE `") || line.contains(" FUNCTION `"))
    {
        "function"
    } else if line.contains("/*!50106 EVENT ") {
        "event"
    } else {
        return;
    };
    *out.objects.entry(kind.to_string()).or_insert(0) += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
-- MariaDB dump 10.19
DROP TABLE IF EXISTS `orders`;
CREATE TABLE `orders` (
  `id` int(11) NOT NULL,
  `note` text DEFAULT NULL
) ENGINE=InnoDB;
LOCK TABLES `orders` WRITE;
INSERT INTO `orders` VALUES (1,'a (paren'),(2,'it\\'s \\\\'),(3,NULL),(4,'x\\ny');
INSERT INTO `orders` VALUES
(5,0x28292729),
(6,'a;b');
UNLOCK TABLES;
CREATE TABLE `we``ird` (`x` int);
INSERT INTO `we``ird` VALUES (1);
/*!50001 VIEW `v` AS select 1 AS `1` */;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `t` BEFORE INSERT ON `orders` FOR EACH ROW SET NEW.id = NEW.id */;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()
CREATE DEFINER=`root`@`localhost` FUNCTION `f`() RETURNS int(11)
/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`localhost`*/ /*!50106 EVENT `e` ON SCHEDULE EVERY 1 DAY DO select 1 */ ;;
";

    #[test]
    fn tuples_and_objects_in_any_buffer_size() {
        for split in [1, 2, 5, 13, 100_000] {
            let mut t: Box<dyn Tally> = Box::new(MysqlTally::default());
            for part in DUMP.as_bytes().chunks(split) {
                t.feed(part);
            }
            let t = t.finish();
            assert_eq!(t.rows.get("orders"), Some(&6), "split {split}");
            assert_eq!(t.rows.get("we`ird"), Some(&1), "split {split}");
            for (k, n) in [
                ("table", 2),
                ("view", 1),
                ("trigger", 1),
                ("function", 2),
                ("event", 1),
            ] {
                assert_eq!(t.objects.get(k), Some(&n), "{k}, split {split}");
            }
            assert!(t.notes.is_empty());
        }
    }

    #[test]
    fn a_long_insert_is_counted_without_being_held() {
        let mut dump = b"INSERT INTO `big` VALUES ".to_vec();
        for i in 0..50_000 {
            dump.extend_from_slice(format!("({i},'{}'),", "v".repeat(20)).as_bytes());
        }
        dump.pop();
        dump.extend_from_slice(b";\n");
        let mut t = MysqlTally::default();
        for part in dump.chunks(8192) {
            t.feed(part);
        }
        assert!(t.head.capacity() <= LINE_CAP * 2);
        assert_eq!(Box::new(t).finish().rows.get("big"), Some(&50_000));
    }
}
