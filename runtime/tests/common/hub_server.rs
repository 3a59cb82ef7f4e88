//! A stand-in for the Hugging Face Hub on 127.0.0.1, for download tests. It serves what the
//! Hub serves to huggingface_hub and hf-hub:
//! - `GET|HEAD /{org}/{name}/resolve/{revision}/{file}` (and `/datasets/...`): the file, with
//!   `ETag`, `X-Repo-Commit`, `Content-Length`, `Accept-Ranges`, and `206` + `Content-Range`
//!   for a `Range: bytes=A-` or `bytes=A-B` request;
//! - `GET /api/{models|datasets}/{org}/{name}/revision/{revision}`: `{"sha", "siblings"}`;
//! - `404` with the Hub's `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
//!   `EntryNotFound`), and `401` (`GatedRepo`) for a gated repository without its token.
//!
//! One request per connection (`Connection: close`). The server stops when dropped, and on its
//! own after two minutes, so a failing test never leaves it running.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A repository the server holds, at one commit.
#[derive(Clone)]
pub struct Repo {
    /// `models` or `datasets`.
    pub kind: &'static str,
    /// `ORG/NAME`.
    pub id: String,
    /// Its commit (40 hex digits); `main` resolves to it.
    pub commit: String,
    /// Path in the repository → content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// A gated repository: the token a request must carry.
    pub token: Option<String>,
}

/// The running server.
pub struct Server {
    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub endpoint: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `repos` on a free port of 127.0.0.1.
    pub fn start(repos: Vec<Repo>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream, &repos, &log2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            endpoint,
            log,
            stop,
            handle: Some(handle),
        }
    }

    /// The requests so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// An ETag for `bytes` (hf-hub names the blob after it): FNV-1a, in hex.
pub fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:08x}", bytes.len())
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    Answer {
        status,
        headers: vec![
            ("X-Error-Code".into(), code.into()),
            ("X-Error-Message".into(), message.into()),
        ],
        body: message.as_bytes().to_vec(),
    }
}

fn serve(stream: TcpStream, repos: &[Repo], log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push(format!("{method} {path}"));
    let answer = route(path, &headers, repos);
    write_answer(stream, method, answer)
}

fn route(path: &str, headers: &BTreeMap<String, String>, repos: &[Repo]) -> Answer {
    let find = |kind: &str, org: &str, name: &str| {
        repos
            .iter()
            .find(|r| r.kind == kind && r.id == format!("{org}/{name}"))
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The file list of a repository at a revision.
    if let ["api", kind, org, name, "revision", revision] = segments[..] {
        let Some(repo) = find(kind, org, name) else {
            return error(404, "RepoNotFound", "Repository not found");
        };
        if revision != "main" && revision != repo.commit {
            return error(404, "RevisionNotFound", "Invalid rev id");
        }
        let siblings: Vec<_> = repo
            .files
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({ "sha": repo.commit, "siblings": siblings }).to_string();
        return Answer {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into_bytes(),
        };
    }
    let (kind, rest) = match segments.first() {
        Some(&"datasets") => ("datasets", &segments[1..]),
        _ => ("models", &segments[..]),
    };
    let [org, name, "resolve", revision, file @ ..] = rest else {
        return error(404, "RepoNotFound", "no such route");
    };
    let Some(repo) = find(kind, org, name) else {
        return error(404, "RepoNotFound", "Repository not found");
    };
    if let Some(token) = &repo.token
        && headers.get("authorization") != Some(&format!("Bearer {token}"))
    {
        return error(
            401,
            "GatedRepo",
            &format!("Access to model {} is restricted", repo.id),
        );
    }
    if *revision != "main" && *revision != repo.commit {
        return error(404, "RevisionNotFound", "Invalid rev id");
    }
    let file = file.join("/");
    let Some(bytes) = repo.files.get(&file) else {
        let mut a = error(404, "EntryNotFound", "Entry not found");
        a.headers
            .push(("X-Repo-Commit".into(), repo.commit.clone()));
        return a;
    };
    let mut headers_out = vec![
        ("ETag".into(), format!("\"{}\"", etag(bytes))),
        ("X-Repo-Commit".into(), repo.commit.clone()),
        ("Accept-Ranges".into(), "bytes".into()),
    ];
    let range = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let start: usize = a.parse().ok()?;
            let end: usize = if b.is_empty() {
                bytes.len().checked_sub(1)?
            } else {
                b.parse::<usize>().ok()?.min(bytes.len().checked_sub(1)?)
            };
            (start <= end).then_some((start, end))
        });
    match range {
        Some((start, end)) => {
            headers_out.push((
                "Content-Range".into(),
                format!("bytes {start}-{end}/{}", bytes.len()),
            ));
            Answer {
                status: 206,
                headers: headers_out,
                body: bytes[start..=end].to_vec(),
            }
        }
        None => Answer {
            status: 200,
            headers: headers_out,
            body: bytes.clone(),
        },
    }
}

fn write_answer(mut stream: TcpStream, method: &str, a: Answer) -> std::io::Result<()> {
    let reason = match a.status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", a.status);
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        a.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&a.body)?;
    }
    stream.flush()
}
