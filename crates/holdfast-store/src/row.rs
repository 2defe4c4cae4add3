//! Reading rows by column name. A column that is missing, of another type, or holding a word
//! the domain does not know is an error of the store, never a panic: the schema and the code
//! may drift (a replica of another version, a hand-edited database), and the caller decides.

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{Any, Decode, Row, Type};

/// Column `name` of `r`.
pub(crate) fn col<'r, T>(r: &'r AnyRow, name: &str) -> Result<T, sqlx::Error>
where
    T: Decode<'r, Any> + Type<Any>,
{
    r.try_get(name)
}

/// An integer column that holds a flag (0 or 1), as both databases store booleans here.
pub(crate) fn flag_col(r: &AnyRow, name: &str) -> Result<bool, sqlx::Error> {
    Ok(col::<i64>(r, name)? != 0)
}

/// A text column that holds one of a domain enum's words (a job's kind, state or trigger).
pub(crate) fn word<T>(r: &AnyRow, name: &str) -> Result<T, sqlx::Error>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: String = col(r, name)?;
    s.parse().map_err(|e: T::Err| sqlx::Error::ColumnDecode {
        index: name.to_string(),
        source: Box::new(e),
    })
}

/// Maps every row with `f`, failing on the first row that does not read.
pub(crate) fn all<T>(
    rows: &[AnyRow],
    f: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, sqlx::Error> {
    rows.iter().map(f).collect()
}
