//! A minimal OTLP/HTTP receiver: no collector runs here, so this stands in
//! for one. It accepts `POST /v1/traces`, keeps each request's content type
//! and raw protobuf body, and answers 200 with an empty
//! `ExportTraceServiceResponse` (an empty protobuf message is zero bytes).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One export request as received.
#[derive(Debug, Clone)]
pub struct Export {
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A receiver on a free loopback port, serving until the process exits.
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    pub endpoint: String,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl OtlpReceiver {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}/v1/traces", listener.local_addr()?);
        let exports = Arc::new(Mutex::new(Vec::new()));
        let sink = exports.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = handle(stream, &sink);
            }
        });
        Ok(Self { endpoint, exports })
    }

    /// Every export received so far.
    pub fn exports(&self) -> Vec<Export> {
        self.exports.lock().expect("receiver lock").clone()
    }
}

/// Reads one export, keeps it, and only then answers: an exporter that
/// saw its 200 finds its spans in [`OtlpReceiver::exports`].
fn handle(mut stream: std::net::TcpStream, sink: &Mutex<Vec<Export>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    sink.lock().expect("receiver lock").push(Export {
        path,
        content_type,
        body,
    });
    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
    Ok(())
}
