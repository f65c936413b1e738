//! CIFAR archives of generated data in the official layout, and an HTTP server on 127.0.0.1
//! that serves them with chosen faults.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndhtl_agent::data::DatasetKind;

/// A gzip'd tar of `data_root/<dataset's folder>/`, as the official archives are laid out.
pub fn cifar_archive(data_root: &Path, dataset: DatasetKind) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    builder
        .append_dir_all(dataset.dir_name(), data_root.join(dataset.dir_name()))
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// What the server did, for assertions.
#[derive(Default)]
pub struct ServerLog {
    /// (path, the `Range` offset asked for).
    pub requests: Vec<(String, Option<String>)>,
}

pub struct TestServer {
    pub base: String,
    pub log: Arc<Mutex<ServerLog>>,
}

impl TestServer {
    /// Requests whose path ends with `file`.
    pub fn requests_for(&self, file: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.requests
            .iter()
            .filter(|(path, _)| path.ends_with(file))
            .count()
    }
}

/// Serves `files` (name → bytes) at `/<mode>/<name>`, the mode choosing a behaviour: `good`,
/// `cut` (the first response stops halfway), `corrupt` (one byte flipped), `norange` (always
/// 200, whole body); any other mode or an unknown name is a 404.
pub fn serve(files: Vec<(String, Vec<u8>)>, requests_budget: usize) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let server_log = Arc::clone(&log);
    let cut_served = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        // Bounded: the server stops by itself after `requests_budget` connections.
        for stream in listener.incoming().take(requests_budget) {
            let Ok(stream) = stream else { continue };
            handle(stream, &files, &server_log, &cut_served);
        }
    });
    TestServer { base, log }
}

fn handle(
    mut stream: TcpStream,
    files: &[(String, Vec<u8>)],
    log: &Mutex<ServerLog>,
    cut_served: &AtomicUsize,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range = Some(value.trim().trim_end_matches('-').to_string());
        }
    }
    log.lock()
        .unwrap()
        .requests
        .push((path.clone(), range.clone()));
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let mode = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    let file = files.iter().find(|(file, _)| file == name);
    let Some((_, body)) = file.filter(|_| ["good", "cut", "corrupt", "norange"].contains(&mode))
    else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let mut body = body.clone();
    if mode == "corrupt" {
        let middle = body.len() / 2;
        body[middle] ^= 0xFF;
    }
    let start: usize = match (&range, mode != "norange") {
        (Some(offset), true) => offset.parse().unwrap(),
        _ => 0,
    };
    let (status, extra) = if start > 0 {
        (
            "206 Partial Content",
            format!(
                "Content-Range: bytes {}-{}/{}\r\n",
                start,
                body.len() - 1,
                body.len()
            ),
        )
    } else {
        ("200 OK", String::new())
    };
    let remaining = &body[start..];
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Content-Type: application/gzip\r\nConnection: close\r\n\r\n",
        remaining.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let cut_now = mode == "cut" && cut_served.fetch_add(1, Ordering::SeqCst) == 0;
    let to_send = if cut_now {
        &remaining[..remaining.len() / 2]
    } else {
        remaining
    };
    let _ = stream.write_all(to_send);
    let _ = stream.flush();
    // Dropping the stream closes the connection; a cut response ends before Content-Length.
}
