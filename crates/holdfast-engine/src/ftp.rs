//! A restic-layout repository on an FTP server, as a rustic `WriteBackend` over suppaftp's
//! blocking client. (OpenDAL 0.58's FTP service hands connections back to its pool with a
//! download still open, so every other read fails; this one finishes or aborts each transfer.)
//!
//! Files are uploaded under a temporary name and renamed into place, so a transfer cut off
//! midway never leaves a short file under a repository name.

use std::io::{Cursor, Read};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rustic_core::repofile::FileType;
use rustic_core::{BytesList, ErrorKind, Id, ReadBackend, RusticError, RusticResult, WriteBackend};
use secrecy::{ExposeSecret, SecretString};
use suppaftp::list::File;
use suppaftp::types::FileType as Transfer;
use suppaftp::{FtpError, FtpStream, Status};

/// Where and as whom.
#[derive(Clone)]
pub struct FtpTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    /// The repository's directory on the server (created when missing).
    pub root: String,
}

pub struct FtpBackend {
    target: FtpTarget,
    /// Logged-in connections not in use, in the repository's directory.
    idle: Mutex<Vec<FtpStream>>,
}

/// The server and directory, never the password.
impl std::fmt::Debug for FtpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.target;
        write!(f, "ftp://{}@{}:{}{}", t.user, t.host, t.port, t.root)
    }
}

/// How many times an operation is tried on a fresh connection when the connection failed.
const TRIES: u32 = 3;

fn path(tpe: FileType, id: &Id) -> String {
    let hex = id.to_hex();
    match tpe {
        FileType::Config => "config".into(),
        FileType::Pack => format!("data/{}/{}", &hex[..2], &*hex),
        _ => format!("{}/{}", tpe.dirname(), &*hex),
    }
}

fn err(op: &str, path: &str, e: FtpError) -> Box<RusticError> {
    // suppaftp's error is not `Sync`: carried as text.
    RusticError::with_source(
        ErrorKind::Backend,
        "FTP {op} of `{path}` failed.",
        std::io::Error::other(e.to_string()),
    )
    .attach_context("op", op.to_string())
    .attach_context("path", path.to_string())
}

/// Whether the server refused for good (a reply in the 5xx range): no point in reconnecting.
fn permanent(e: &FtpError) -> bool {
    matches!(e, FtpError::UnexpectedResponse(r) if r.status.code() >= 500)
}

/// A lookup the server refused for good (5xx) found nothing: `absent`.
fn or_absent<T>(r: Result<T, FtpError>, absent: T) -> Result<T, FtpError> {
    match r {
        Err(e) if permanent(&e) => Ok(absent),
        other => other,
    }
}

impl FtpBackend {
    pub fn new(target: FtpTarget) -> Self {
        Self {
            target,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn connect(&self) -> Result<FtpStream, FtpError> {
        let t = &self.target;
        let mut s = FtpStream::connect((t.host.as_str(), t.port))?;
        s.get_ref()
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(FtpError::ConnectionError)?;
        s.login(t.user.as_str(), t.password.expose_secret())?;
        s.transfer_type(Transfer::Binary)?;
        if s.cwd(&t.root).is_err() {
            let mut at = String::new();
            for part in t.root.split('/').filter(|p| !p.is_empty()) {
                at.push('/');
                at.push_str(part);
                let _ = s.mkdir(&at);
            }
            s.cwd(&t.root)?;
        }
        Ok(s)
    }

    /// Runs `f` on an idle connection or a new one; a connection that failed is dropped and
    /// the operation tried again on a new one, unless the server refused for good.
    fn with<T>(
        &self,
        op: &str,
        path: &str,
        mut f: impl FnMut(&mut FtpStream) -> Result<T, FtpError>,
    ) -> RusticResult<T> {
        self.with_conn(op, path, |c, _| f(c))
    }

    /// As [`Self::with`]; `f` may set the flag to drop a connection it left in doubt.
    fn with_conn<T>(
        &self,
        op: &str,
        path: &str,
        mut f: impl FnMut(&mut FtpStream, &mut bool) -> Result<T, FtpError>,
    ) -> RusticResult<T> {
        let mut last = None;
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            let conn = self.idle.lock().unwrap().pop();
            let mut conn = match conn.map_or_else(|| self.connect(), Ok) {
                Ok(c) => c,
                Err(e) if permanent(&e) => return Err(err(op, path, e)),
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let mut discard = false;
            match f(&mut conn, &mut discard) {
                Ok(v) => {
                    if !discard {
                        self.idle.lock().unwrap().push(conn);
                    }
                    return Ok(v);
                }
                Err(e) if permanent(&e) => {
                    self.idle.lock().unwrap().push(conn);
                    return Err(err(op, path, e));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(err(op, path, last.unwrap_or(FtpError::BadResponse)))
    }

    /// Writes, reads back and removes a file in the repository's directory: the endpoint
    /// check's "writable".
    pub fn probe_write(&self, name: &str, data: &[u8]) -> RusticResult<bool> {
        self.with("write test", name, |c| {
            c.put_file(name, &mut Cursor::new(data))?;
            let back = c.retr_as_buffer(name)?.into_inner();
            c.rm(name)?;
            Ok(back == data)
        })
    }

    /// Lists a directory's files with their sizes; a missing directory is empty.
    fn list_dir(&self, dir: &str) -> RusticResult<Vec<(String, u64)>> {
        self.with("listing", dir, |c| {
            Ok(or_absent(c.list(Some(dir)), vec![])?
                .iter()
                .filter_map(|l| File::from_str(l).ok())
                .filter(File::is_file)
                .map(|f| (f.name().to_string(), f.size() as u64))
                .collect())
        })
    }
}

impl ReadBackend for FtpBackend {
    fn location(&self) -> String {
        format!("{self:?}")
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let size = self.with("size", "config", |c| {
                or_absent(c.size("config").map(Some), None)
            })?;
            return Ok(size
                .map(|n| vec![(Id::default(), u32::try_from(n).unwrap_or(u32::MAX))])
                .unwrap_or_default());
        }
        let dirs: Vec<String> = if tpe == FileType::Pack {
            self.with("listing", "data", |c| {
                or_absent(c.nlst(Some("data")), vec![])
            })?
            .into_iter()
            .map(|n| format!("data/{}", n.rsplit('/').next().unwrap_or(&n)))
            .collect()
        } else {
            vec![tpe.dirname().to_string()]
        };
        let mut out = vec![];
        for dir in dirs {
            for (name, size) in self.list_dir(&dir)? {
                if name.contains(".tmp-") {
                    continue;
                }
                if let Ok(id) = name.parse::<Id>() {
                    out.push((id, u32::try_from(size).unwrap_or(u32::MAX)));
                }
            }
        }
        Ok(out)
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let p = path(tpe, id);
        self.with("download", &p, |c| c.retr_as_buffer(&p))
            .map(|b| Bytes::from(b.into_inner()))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let p = path(tpe, id);
        self.with_conn("download", &p, |c, discard| {
            if offset > 0 {
                c.resume_transfer(offset as usize)?;
            }
            let mut stream = c.retr_as_stream(&p)?;
            let mut buf = vec![0; length as usize];
            stream
                .read_exact(&mut buf)
                .map_err(FtpError::ConnectionError)?;
            // At the end of the file the transfer is finished and the connection reusable;
            // otherwise the rest is not wanted: servers answer an abort in different ways, so
            // the connection is closed instead.
            let mut rest = [0u8; 1];
            match stream.read(&mut rest) {
                Ok(0) => c.finalize_retr_stream(stream)?,
                _ => *discard = true,
            }
            Ok(Bytes::from(buf))
        })
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        path(tpe, id)
    }
}

impl WriteBackend for FtpBackend {
    fn create(&self) -> RusticResult<()> {
        let mut dirs: Vec<String> = ["keys", "snapshots", "index", "data"]
            .map(String::from)
            .to_vec();
        dirs.extend((0..=255u8).map(|i| format!("data/{i:02x}")));
        self.with("creating directories", "", |c| {
            for d in &dirs {
                // An existing directory answers 550; anything else shows on the first write.
                match c.mkdir(d) {
                    Ok(()) => {}
                    Err(e) if permanent(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let p = path(tpe, id);
        let tmp = format!("{p}.tmp-{}", std::process::id());
        self.with("upload", &p, |c| {
            // Straight from the pack's buffers (a clone shares them).
            c.put_file(&tmp, &mut content.clone().reader())?;
            // Some servers refuse to rename over an existing file.
            if tpe == FileType::Config {
                let _ = c.rm(&p);
            }
            c.rename(&tmp, &p)
        })
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let p = path(tpe, id);
        self.with("removal", &p, |c| match c.rm(&p) {
            Err(FtpError::UnexpectedResponse(r)) if r.status == Status::FileUnavailable => Ok(()),
            other => other,
        })
    }
}
