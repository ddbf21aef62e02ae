//! `coto serve`: a small static HTTP server for the web page, the WASM package, the model and
//! the dataset, bound to the loopback interface by default.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::common::{FormatArg, data_file, model_dir};

/// Arguments of `coto serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind. The default serves this machine only.
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// TCP port; 0 picks a free one (the chosen URL is printed).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    port: u16,
    /// Directory with the page (index.html, app.js, pkg/). Default: ./web.
    #[arg(long, value_name = "DIR", default_value = "web")]
    web: PathBuf,
    /// Model directory served under /assets/model/. Default: the cached all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Labelled data served under /assets/data/train. Default: the cached SMS spam collection.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Layout of the served data, passed to the page. Default: auto-detected by the page.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
}

/// What the server reads files from.
struct Site {
    web: PathBuf,
    model: PathBuf,
    data: PathBuf,
    manifest: String,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if !args.web.join("index.html").is_file() {
        bail!(
            "{} has no index.html; run coto serve from the repository root or pass --web DIR",
            args.web.display()
        );
    }
    if !args.web.join("pkg/coto.js").is_file() {
        tracing::warn!("{}/pkg is missing: build the WASM package with `bash web/build.sh`", args.web.display());
    }
    let model = model_dir(args.model.as_deref())?;
    let data = data_file(args.data.as_deref())?;
    let format = args.format.map(|f| match f {
        FormatArg::Csv => "csv",
        FormatArg::Tsv => "tsv",
        FormatArg::Jsonl => "jsonl",
        FormatArg::LabelFirst => "label-first",
    });
    let manifest = serde_json::json!({
        "model": {
            "name": model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            "config": "/assets/model/config.json",
            "weights": "/assets/model/model.safetensors",
            "tokenizer": "/assets/model/tokenizer.json",
        },
        "data": {
            "name": data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            "url": "/assets/data/train",
            "format": format,
        },
    })
    .to_string();
    let site = Arc::new(Site {
        web: args.web.clone(),
        model,
        data,
        manifest,
    });

    let listener = TcpListener::bind(SocketAddr::new(args.bind, args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
    let address = listener.local_addr()?;
    println!("serving http://{address}/");
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let site = site.clone();
        std::thread::spawn(move || {
            if let Err(error) = handle(stream, &site) {
                tracing::debug!(%error, "request failed");
            }
        });
    }
    Ok(())
}

fn handle(mut stream: TcpStream, site: &Site) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers; the server needs only the request line.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", b"only GET and HEAD are served\n", method == "HEAD");
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    tracing::debug!(path, "request");
    let body = match resolve(site, path) {
        Resolved::Text(text) => Some((text.into_bytes(), "application/json")),
        Resolved::File(file) => std::fs::read(&file).ok().map(|bytes| (bytes, content_type(&file))),
        Resolved::NotFound => None,
    };
    match body {
        Some((bytes, kind)) => respond(&mut stream, 200, kind, &bytes, method == "HEAD"),
        None => respond(&mut stream, 404, "text/plain", b"not found\n", method == "HEAD"),
    }
}

enum Resolved {
    Text(String),
    File(PathBuf),
    NotFound,
}

fn resolve(site: &Site, path: &str) -> Resolved {
    match path {
        "/assets/manifest.json" => Resolved::Text(site.manifest.clone()),
        "/assets/data/train" => Resolved::File(site.data.clone()),
        "/assets/model/config.json" | "/assets/model/model.safetensors" | "/assets/model/tokenizer.json" => {
            Resolved::File(site.model.join(&path["/assets/model/".len()..]))
        }
        "/" => Resolved::File(site.web.join("index.html")),
        _ => match safe_relative(path) {
            Some(relative) => Resolved::File(site.web.join(relative)),
            None => Resolved::NotFound,
        },
    }
}

/// The request path as a path under the web directory, or `None` if it tries to leave it.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| relative.to_path_buf())
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("wasm") => "application/wasm",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ts") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn respond(stream: &mut TcpStream, status: u16, kind: &str, body: &[u8], head_only: bool) -> Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()?;
    Ok(())
}
