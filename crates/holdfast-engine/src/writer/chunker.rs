//! Content-defined chunking with a Rabin fingerprint over a 64-byte window: cut for cut the
//! chunks rustic_core's chunker (and so restic's) makes from the same bytes and the same
//! repository polynomial, so that deduplication works across all three.
//!
//! The rules, as rustic_core applies them (the property test in `writer::tests` holds us to
//! them):
//! - a chunk is at least `min` bytes (the last one of a stream may be shorter), at most `max`;
//! - the first `min - 64` bytes of a chunk are not hashed at all;
//! - the window is primed with bytes `min-64 .. min-1` of the chunk (63 bytes; byte `min-1`
//!   never enters the window), then every byte from `min` on is slid in;
//! - a chunk ends before the next byte is slid in, at the first length `>= min` where
//!   `hash & (avg - 1) == 0`, or at `max`.
//!
//! Unlike rustic_core's, the hot loop runs over a slice (no per-byte buffer bookkeeping), and
//! the bytes before `min` are copied, never looked at.

use std::io::{self, Read};

/// The window of the rolling hash.
const WINDOW: usize = 64;
/// Bytes read from the stream at a time once a chunk has its minimum size.
const READ_BLOCK: usize = 256 * 1024;

/// Chunking parameters of a repository (its config file).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub poly: u64,
    /// The average chunk size; a power of two.
    pub avg: usize,
    pub min: usize,
    pub max: usize,
}

impl Params {
    /// Refuses what rustic_core would refuse, and what the chunker cannot do.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |why: String| {
            Err(crate::Error::Other(format!(
                "the repository's chunker settings: {why}"
            )))
        };
        if !self.avg.is_power_of_two() {
            return bad(format!("chunk size {} is not a power of two", self.avg));
        }
        if self.min > self.avg || self.max < self.avg || self.min < WINDOW {
            return bad(format!(
                "chunk sizes min {} / avg {} / max {} are out of order",
                self.min, self.avg, self.max
            ));
        }
        if degree(self.poly) < 8 {
            return bad(format!("chunker polynomial {:#x} is too small", self.poly));
        }
        Ok(())
    }
}

/// The lookup tables of a polynomial.
pub struct Tables {
    /// `out[b]`: the hash of `b` followed by 63 zero bytes, to slide `b` out of the window.
    out: [u64; 256],
    /// `modt[b]`: reduces the 8 bits that shifting pushes above the polynomial's degree.
    modt: [u64; 256],
    shift: u32,
}

fn degree(p: u64) -> i32 {
    63 - p.leading_zeros() as i32
}

fn modulo(mut p: u64, m: u64) -> u64 {
    while degree(p) >= degree(m) {
        p ^= m << (degree(p) - degree(m));
    }
    p
}

impl Tables {
    pub fn new(poly: u64) -> Self {
        let mut out = [0; 256];
        let mut modt = [0; 256];
        let k = degree(poly);
        for b in 0..256u64 {
            let mut h = modulo(b, poly);
            for _ in 0..WINDOW - 1 {
                h = modulo(h << 8, poly);
            }
            out[b as usize] = h;
            let p = b << k;
            modt[b as usize] = modulo(p, poly) | p;
        }
        Self {
            out,
            modt,
            shift: (k - 8) as u32,
        }
    }

    #[inline(always)]
    fn slide(&self, h: u64, out: u8, b: u8) -> u64 {
        let h = h ^ self.out[out as usize];
        let idx = (h >> self.shift) as u8;
        ((h << 8) | u64::from(b)) ^ self.modt[idx as usize]
    }
}

/// Lanes of [`scan`], and the bytes each covers per round.
const LANES: usize = 4;
const LANE: usize = 16 * 1024;

/// The first position `p` in `from..data.len()` where the hash of `data[p-64..p]` has none of
/// `mask`'s bits set, or (none) the hash at `data.len()`; `h` is the hash at `from`, and
/// `from >= 64`.
///
/// The hash of a full window depends only on the window's 64 bytes, so four stretches of the
/// data are hashed side by side (each lane warmed up on the 64 bytes before it): four
/// independent dependency chains keep the CPU busy where one chain of table lookups waits on
/// itself. The earliest lane with a cut wins.
fn scan(t: &Tables, mask: u64, data: &[u8], from: usize, mut h: u64) -> Result<usize, u64> {
    let mut p = from;
    while data.len() - p >= LANES * LANE {
        let lane = |k: usize| -> &[u8; LANE + WINDOW] {
            let s = p + k * LANE;
            data[s - WINDOW..s + LANE].try_into().expect("lane length")
        };
        let lanes = [lane(0), lane(1), lane(2), lane(3)];
        let mut hs = [h, 0, 0, 0];
        for (hk, lane) in hs.iter_mut().zip(&lanes).skip(1) {
            for &b in &lane[..WINDOW] {
                *hk = t.slide(*hk, 0, b);
            }
        }
        let mut first = [usize::MAX; LANES];
        for i in 0..LANE {
            if hs.iter().any(|h| h & mask == 0) {
                for (k, (hk, f)) in hs.iter().zip(first.iter_mut()).enumerate() {
                    if hk & mask == 0 && *f == usize::MAX {
                        *f = p + k * LANE + i;
                    }
                }
                if first[0] != usize::MAX {
                    return Ok(first[0]);
                }
            }
            for (hk, lane) in hs.iter_mut().zip(&lanes) {
                *hk = t.slide(*hk, lane[i], lane[i + WINDOW]);
            }
        }
        if let Some(&cut) = first.iter().find(|&&f| f != usize::MAX) {
            return Ok(cut);
        }
        h = hs[LANES - 1];
        p += LANES * LANE;
    }
    for (i, w) in data[p - WINDOW..].windows(WINDOW + 1).enumerate() {
        if h & mask == 0 {
            return Ok(p + i);
        }
        h = t.slide(h, w[0], w[WINDOW]);
    }
    Err(h)
}

/// Splits a stream into chunks.
pub struct Chunker<'t, R> {
    rd: R,
    t: &'t Tables,
    p: Params,
    mask: u64,
    /// Bytes read past the last cut: the start of the next chunk.
    carry: Vec<u8>,
    eof: bool,
}

impl<'t, R: Read> Chunker<'t, R> {
    pub fn new(rd: R, t: &'t Tables, p: Params) -> Self {
        Self {
            rd,
            t,
            p,
            mask: p.avg as u64 - 1,
            carry: Vec::new(),
            eof: false,
        }
    }

    /// Reads until `buf` holds `want` bytes or the stream ends; true if it holds them.
    fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
        while buf.len() < want && !self.eof {
            let have = buf.len();
            buf.resize(want, 0);
            let n = loop {
                match self.rd.read(&mut buf[have..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r,
                }
            };
            match n {
                Ok(0) => {
                    buf.truncate(have);
                    self.eof = true;
                }
                Ok(n) => buf.truncate(have + n),
                Err(e) => {
                    buf.truncate(have);
                    return Err(e);
                }
            }
        }
        Ok(buf.len() >= want)
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Params { min, max, .. } = self.p;
        let mut buf = Vec::with_capacity(min + READ_BLOCK);
        buf.append(&mut self.carry);
        if !self.fill(&mut buf, min)? {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        let t = self.t;
        let mut h = 0u64;
        for &b in &buf[min - WINDOW..min - 1] {
            h = t.slide(h, 0, b);
        }
        // `pos`: the chunk's length if it ended now; bytes `..pos` are hashed.
        let mut pos = min;
        let cut = 'cut: loop {
            if pos >= max || h & self.mask == 0 {
                break 'cut pos;
            }
            if pos == buf.len() && !self.fill(&mut buf, pos + READ_BLOCK)? && pos == buf.len() {
                break 'cut pos;
            }
            // The first 64 bytes after `min`: the window still holds the primed bytes, with
            // a zero where byte `min - 1` would be.
            while pos < buf.len().min(min + WINDOW) {
                if pos >= max || h & self.mask == 0 {
                    break 'cut pos;
                }
                let out = if pos == min { 0 } else { buf[pos - WINDOW - 1] };
                h = t.slide(h, out, buf[pos]);
                pos += 1;
            }
            // The steady state: the window is the last 64 bytes.
            let end = buf.len().min(max);
            if pos >= min + WINDOW && pos < end {
                match scan(t, self.mask, &buf[..end], pos, h) {
                    Ok(cut) => break 'cut cut,
                    Err(at_end) => {
                        h = at_end;
                        pos = end;
                    }
                }
            }
        };
        self.carry = buf[cut..].to_vec();
        buf.truncate(cut);
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::random;

    /// restic's test polynomial.
    const POLY: u64 = 0x3DA3358B4DC173;

    fn params() -> Params {
        Params {
            poly: POLY,
            avg: 1 << 20,
            min: 512 * 1024,
            max: 8 << 20,
        }
    }

    fn chunks(data: &[u8], p: Params, read: usize) -> Vec<usize> {
        /// Returns at most `read` bytes per call, like a pipe.
        struct Dribble<'a>(&'a [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.1).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let t = Tables::new(p.poly);
        let mut c = Chunker::new(Dribble(data, read), &t, p);
        let mut out = vec![];
        let mut total = vec![];
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.len());
            total.extend_from_slice(&ch);
        }
        assert_eq!(total, data, "chunks put together give the stream back");
        out
    }

    #[test]
    fn bounds_hold_and_reads_of_any_size_cut_alike() {
        let p = params();
        let data = random(20 << 20, 7);
        let a = chunks(&data, p, 1 << 20);
        let b = chunks(&data, p, 4093);
        assert_eq!(a, b);
        assert!(a.len() > 5, "{a:?}");
        for &len in &a[..a.len() - 1] {
            assert!(len >= p.min && len <= p.max, "{len}");
        }
    }

    #[test]
    fn small_and_degenerate_streams() {
        let p = params();
        assert!(chunks(&[], p, 100).is_empty());
        assert_eq!(chunks(&[1], p, 100), vec![1]);
        assert_eq!(chunks(&vec![0; p.min - 1], p, 1 << 16), vec![p.min - 1]);
        // Zeros never hash to a cut (the hash stays 0: a cut at every `min`).
        let zeros = chunks(&vec![0; 3 * p.min + 5], p, 1 << 16);
        assert_eq!(zeros, vec![p.min, p.min, p.min, 5]);
        // No cut point at all: `max`.
        let ones = chunks(&vec![1; p.max + 10], p, 1 << 16);
        assert_eq!(ones[0], p.max);
    }

    /// The four-lane scan finds the cuts one lane finds, with cuts frequent enough to land on
    /// and around every lane boundary.
    #[test]
    fn lanes_find_the_same_cuts_as_one_lane() {
        let t = Tables::new(POLY);
        let data = random(LANES * LANE * 5 + 777, 3);
        let hash_at = |p: usize| data[p - WINDOW..p].iter().fold(0, |h, &b| t.slide(h, 0, b));
        let naive = |mask: u64, from: usize| -> Result<usize, u64> {
            let mut h = hash_at(from);
            for p in from..data.len() {
                if h & mask == 0 {
                    return Ok(p);
                }
                h = t.slide(h, data[p - WINDOW], data[p]);
            }
            Err(h)
        };
        for bits in [6, 10, 14, 17, 40] {
            let mask = (1u64 << bits) - 1;
            for from in [64, 65, 1000, LANE, LANE + 63, 3 * LANE + 5] {
                let mut at = from;
                // Walk from cut to cut across the whole buffer.
                loop {
                    let want = naive(mask, at);
                    assert_eq!(scan(&t, mask, &data, at, hash_at(at)), want, "{bits} {at}");
                    match want {
                        Ok(c) if c + 1 < data.len() => at = c + 1,
                        _ => break,
                    }
                }
            }
        }
    }

    #[test]
    fn parameters_are_checked() {
        let mut p = params();
        assert!(p.validate().is_ok());
        p.avg = 1000;
        assert!(p.validate().is_err());
    }
}
