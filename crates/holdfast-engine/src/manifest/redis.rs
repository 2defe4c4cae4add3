//! Redis: the keys of each database, counted by walking the RDB file as it passes.
//!
//! Every key of an RDB is a string followed by its value, whose encodings are strings, lengths
//! and a few fixed-size fields; the walk skips each string's bytes without holding them, so a
//! value of any size costs nothing. Where it meets an encoding it cannot walk (module values,
//! streams, fields with their own expiry), it stops and the counts come from the size hints
//! Redis writes at the start of each database (`RESIZEDB`), which is said in a note.

use std::collections::BTreeMap;

use super::{FileTally, Tally};

#[derive(Default)]
pub(super) struct RdbTally {
    /// The bytes of the last feed, and how far the walk is through them (only a few
    /// headers' bytes are carried over to the next feed).
    buf: Vec<u8>,
    pos: usize,
    /// Bytes to pass over before the walk goes on (a string's content).
    skip: u64,
    todo: Vec<Step>,
    started: bool,
    db: u32,
    /// Keys walked per database.
    walked: BTreeMap<u32, u64>,
    /// Keys walked with an expiry, per database.
    expiring: BTreeMap<u32, u64>,
    /// An expiry was read: it belongs to the next key.
    expiry: bool,
    /// `RESIZEDB` hints per database: (keys, keys with an expiry).
    hints: BTreeMap<u32, (u64, u64)>,
    state: Walk,
}

#[derive(Default, PartialEq)]
enum Walk {
    #[default]
    Going,
    Done,
    GaveUp(String),
}

#[derive(Clone, Copy)]
enum Step {
    Opcode,
    Str,
    /// A length, then what it counts.
    Count(Unit),
    Rep(u64, Unit),
    Fixed(u64),
    /// A zset score of the old format: a length byte, or 253..=255 for NaN and infinities.
    OldDouble,
    SelectDb,
    ResizeDb,
    /// A length read and dropped.
    Len,
}

#[derive(Clone, Copy)]
enum Unit {
    Str,
    TwoStr,
    StrOldDouble,
    StrF64,
    LenStr,
}

enum Got {
    /// (value, whether it announces a special string encoding, bytes used)
    Len(u64, bool, usize),
    More,
    Bad,
}

/// Reads an RDB length at the start of `b`.
fn length(b: &[u8]) -> Got {
    let Some(&first) = b.first() else {
        return Got::More;
    };
    let low = u64::from(first & 0x3f);
    match (first >> 6, first) {
        (0, _) => Got::Len(low, false, 1),
        (1, _) if b.len() >= 2 => Got::Len((low << 8) | u64::from(b[1]), false, 2),
        (3, _) => Got::Len(low, true, 1),
        (2, 0x80) if b.len() >= 5 => Got::Len(
            u64::from(u32::from_be_bytes([b[1], b[2], b[3], b[4]])),
            false,
            5,
        ),
        (2, 0x81) if b.len() >= 9 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[1..9]);
            Got::Len(u64::from_be_bytes(v), false, 9)
        }
        (2, f) if f != 0x80 && f != 0x81 => Got::Bad,
        _ => Got::More,
    }
}

impl RdbTally {
    fn walk(&mut self) {
        loop {
            if self.state != Walk::Going {
                self.buf.clear();
                self.pos = 0;
                return;
            }
            if self.skip > 0 {
                let n = self.skip.min((self.buf.len() - self.pos) as u64);
                self.pos += n as usize;
                self.skip -= n;
                if self.skip > 0 {
                    break;
                }
            }
            if !self.started {
                if self.buf.len() - self.pos < 9 {
                    break;
                }
                if !self.buf[self.pos..].starts_with(b"REDIS") {
                    self.state = Walk::GaveUp("the stream is not an RDB file".into());
                    continue;
                }
                self.pos += 9;
                self.started = true;
            }
            let step = self.todo.pop().unwrap_or(Step::Opcode);
            match self.step(step) {
                Some(used) => self.pos += used,
                None => {
                    self.todo.push(step);
                    break;
                }
            }
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
    }

    /// Takes one step: the bytes it used, or `None` when it needs more (nothing used).
    fn step(&mut self, step: Step) -> Option<usize> {
        let b = &self.buf[self.pos..];
        macro_rules! len {
            ($b:expr) => {
                match length($b) {
                    Got::Len(v, special, used) => (v, special, used),
                    Got::More => return None,
                    Got::Bad => return self.bad(),
                }
            };
        }
        let push = |s: &mut Vec<Step>, steps: &[Step]| s.extend(steps.iter().rev());
        match step {
            Step::Opcode => {
                let &op = b.first()?;
                match op {
                    0xFF => self.state = Walk::Done,
                    0xFE => self.todo.push(Step::SelectDb),
                    0xFB => self.todo.push(Step::ResizeDb),
                    0xFA => push(&mut self.todo, &[Step::Str, Step::Str]),
                    0xFD => {
                        self.expiry = true;
                        self.todo.push(Step::Fixed(4));
                    }
                    0xFC => {
                        self.expiry = true;
                        self.todo.push(Step::Fixed(8));
                    }
                    0xF8 => self.todo.push(Step::Len),
                    0xF9 => self.todo.push(Step::Fixed(1)),
                    0xF5 => self.todo.push(Step::Str),
                    0xF4 => push(&mut self.todo, &[Step::Len, Step::Len, Step::Len]),
                    t => {
                        let value = match t {
                            0 | 9..=13 | 16 | 17 | 20 => Step::Str,
                            1 | 2 | 14 => Step::Count(Unit::Str),
                            3 => Step::Count(Unit::StrOldDouble),
                            4 => Step::Count(Unit::TwoStr),
                            5 => Step::Count(Unit::StrF64),
                            18 => Step::Count(Unit::LenStr),
                            _ => {
                                self.state = Walk::GaveUp(format!(
                                    "a value of RDB type {t} (a module value, a stream or \
                                     fields with their own expiry) is not walked"
                                ));
                                return Some(1);
                            }
                        };
                        *self.walked.entry(self.db).or_insert(0) += 1;
                        if std::mem::take(&mut self.expiry) {
                            *self.expiring.entry(self.db).or_insert(0) += 1;
                        }
                        push(&mut self.todo, &[Step::Str, value]);
                    }
                }
                Some(1)
            }
            Step::Str => {
                let (n, special, used) = len!(b);
                if !special {
                    self.skip = n;
                    return Some(used);
                }
                match n {
                    // Integers of 1, 2 and 4 bytes.
                    0 => self.skip = 1,
                    1 => self.skip = 2,
                    2 => self.skip = 4,
                    // LZF: the compressed length, the uncompressed length, then the bytes.
                    3 => {
                        let (clen, _, a) = len!(&b[used..]);
                        let (_, _, c) = len!(&b[used + a..]);
                        self.skip = clen;
                        return Some(used + a + c);
                    }
                    _ => return self.bad(),
                }
                Some(used)
            }
            Step::Count(unit) => {
                let (n, _, used) = len!(b);
                self.todo.push(Step::Rep(n, unit));
                Some(used)
            }
            Step::Rep(0, _) => Some(0),
            Step::Rep(n, unit) => {
                self.todo.push(Step::Rep(n - 1, unit));
                let steps: &[Step] = match unit {
                    Unit::Str => &[Step::Str],
                    Unit::TwoStr => &[Step::Str, Step::Str],
                    Unit::StrOldDouble => &[Step::Str, Step::OldDouble],
                    Unit::StrF64 => &[Step::Str, Step::Fixed(8)],
                    Unit::LenStr => &[Step::Len, Step::Str],
                };
                push(&mut self.todo, steps);
                Some(0)
            }
            Step::Fixed(n) => {
                self.skip = n;
                Some(0)
            }
            Step::OldDouble => {
                let &first = b.first()?;
                if first < 253 {
                    self.skip = u64::from(first);
                }
                Some(1)
            }
            Step::Len => Some(len!(b).2),
            Step::SelectDb => {
                let (n, _, used) = len!(b);
                self.db = u32::try_from(n).unwrap_or(u32::MAX);
                self.walked.entry(self.db).or_insert(0);
                Some(used)
            }
            Step::ResizeDb => {
                let (keys, _, a) = len!(b);
                let (expiring, _, c) = len!(&b[a..]);
                self.hints.insert(self.db, (keys, expiring));
                Some(a + c)
            }
        }
    }

    fn bad(&mut self) -> Option<usize> {
        self.state = Walk::GaveUp("an unknown length encoding".into());
        Some(0)
    }
}

impl Tally for RdbTally {
    fn feed(&mut self, buf: &[u8]) {
        if self.state != Walk::Going {
            return;
        }
        self.buf.extend_from_slice(buf);
        self.walk();
    }

    fn finish(self: Box<Self>) -> FileTally {
        let mut out = FileTally::default();
        match self.state {
            Walk::Done => {
                out.keys = self.walked;
                out.expiring = self.expiring;
            }
            Walk::GaveUp(why) => {
                out.keys = self.hints.iter().map(|(db, (k, _))| (*db, *k)).collect();
                out.expiring = self.hints.iter().map(|(db, (_, e))| (*db, *e)).collect();
                out.notes.push(format!(
                    "{why}; the key counts are the size hints Redis wrote at the start of each \
                     database"
                ));
            }
            Walk::Going => out
                .notes
                .push("the RDB file ends before its end marker".into()),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &[u8]) -> Vec<u8> {
        let mut v = if s.len() < 64 {
            vec![s.len() as u8]
        } else {
            let mut v = vec![0x80];
            v.extend_from_slice(&(s.len() as u32).to_be_bytes());
            v
        };
        v.extend_from_slice(s);
        v
    }

    /// An RDB with aux fields, two databases (hints and keys of several encodings), an expiry
    /// and an int-encoded string.
    fn rdb() -> Vec<u8> {
        let mut r = b"REDIS0011".to_vec();
        r.push(0xFA);
        r.extend(string(b"redis-ver"));
        r.extend(string(b"7.0.15"));
        r.push(0xFA);
        r.extend(string(b"ctime"));
        r.extend([0xC2, 1, 2, 3, 4]); // int32-encoded
        r.extend([0xFE, 0, 0xFB, 3, 1]);
        r.push(0); // string
        r.extend(string(b"k1"));
        r.extend(string(&vec![b'v'; 100_000]));
        r.push(0xFC);
        r.extend([0; 8]);
        r.push(4); // hash: 2 pairs
        r.extend(string(b"h"));
        r.push(2);
        for s in [&b"f1"[..], b"v1", b"f2", b"v2"] {
            r.extend(string(s));
        }
        r.push(18); // quicklist2: 1 node
        r.extend(string(b"list"));
        r.push(1);
        r.push(2);
        r.extend(string(b"listpack bytes"));
        r.extend([0xFE, 3, 0xFB, 1, 0]);
        r.push(5); // zset2: 1 member
        r.extend(string(b"z"));
        r.push(1);
        r.extend(string(b"m"));
        r.extend([0; 8]);
        r.push(0xFF);
        r.extend([0; 8]);
        r
    }

    #[test]
    fn keys_per_database_in_any_buffer_size() {
        for split in [1, 2, 7, 4096, 1 << 20] {
            let mut t: Box<dyn Tally> = Box::new(RdbTally::default());
            for part in rdb().chunks(split) {
                t.feed(part);
            }
            let t = t.finish();
            assert_eq!(t.keys, BTreeMap::from([(0, 3), (3, 1)]), "split {split}");
            assert_eq!(t.expiring, BTreeMap::from([(0, 1)]), "split {split}");
            assert!(t.notes.is_empty(), "{:?}", t.notes);
        }
    }

    #[test]
    fn an_unknown_encoding_falls_back_to_the_hints_and_says_so() {
        let mut r = b"REDIS0011".to_vec();
        r.extend([0xFE, 0, 0xFB, 7, 0]);
        r.push(21); // a stream
        r.extend(string(b"s"));
        r.extend([1, 2, 3]);
        let mut t: Box<dyn Tally> = Box::new(RdbTally::default());
        t.feed(&r);
        let t = t.finish();
        assert_eq!(t.keys, BTreeMap::from([(0, 7)]));
        assert_eq!(t.notes.len(), 1);
    }
}
