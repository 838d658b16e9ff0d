//! `fc7 serve`: a local web gallery over one index — browse its images, drop or pick an image
//! to see its nearest neighbours, click any neighbour to search from it. Built on axum/tokio;
//! index work (SQLite, the memory-mapped graph, the model) runs on blocking threads.
//!
//! Safe by construction: files are only ever named by catalog id (no path comes from a
//! request), uploads are capped in size and decoded with `fc7 index`'s pixel limit, and there
//! is no endpoint that writes. Every refusal is a 4xx with a one-line reason, and the server
//! keeps serving.

mod thumbs;
pub mod token;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::infer::embed::{EmbedOptions, Embedder};
use crate::search::catalog::Meta;
use crate::search::index::{Index, Location};
use crate::search::pg::PgIndex;
use crate::search::searcher::Searcher;
use crate::search::store::Store;

/// Largest upload accepted, in bytes.
pub const MAX_UPLOAD: usize = 32 << 20;
const PAGE: &str = include_str!("page.html");

pub struct ServeOptions {
    pub index: Location,
    pub addr: SocketAddr,
    pub embed: EmbedOptions,
    pub max_pixels: u64,
    /// Every request must carry it (`token::check`); required off loopback.
    pub token: Option<String>,
}

/// The index behind the gallery: a folder (re-opened per request, so a running `fc7 index`
/// shows up) or a PostgreSQL store (one connection, shared).
enum Source {
    Folder(Mutex<Store>),
    Postgres(Box<PgIndex>),
}

struct Gallery {
    source: Source,
    embedder: Mutex<Option<Embedder>>,
    embed: EmbedOptions,
    max_pixels: u64,
    thumbs: thumbs::Thumbs,
}

/// A refusal or failure as an HTTP status and one line.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        let status = if e.is_per_file() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Refusal(status, e.to_string())
    }
}

type Answer<T> = std::result::Result<T, Refusal>;

/// Runs `f` with the gallery on a blocking thread.
async fn blocking<T: Send + 'static>(
    g: &Arc<Gallery>,
    f: impl FnOnce(&Gallery) -> Answer<T> + Send + 'static,
) -> Answer<T> {
    let g = g.clone();
    tokio::task::spawn_blocking(move || f(&g))
        .await
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

impl Gallery {
    /// Runs `f` with the index.
    fn with<T>(&self, f: impl FnOnce(&dyn Index) -> Answer<T>) -> Answer<T> {
        match &self.source {
            Source::Folder(store) => {
                let store = store.lock().expect("store lock");
                f(&Searcher::open(&store, false, None)?)
            }
            Source::Postgres(pg) => f(pg.as_ref()),
        }
    }
}

fn not_found(id: i64) -> Refusal {
    Refusal(
        StatusCode::NOT_FOUND,
        format!("no image {id} in this index"),
    )
}

fn name_of(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[derive(Deserialize)]
struct K {
    k: Option<usize>,
}

impl K {
    fn get(&self) -> usize {
        self.k.unwrap_or(6).clamp(1, 100)
    }
}

/// The neighbours of `q` as JSON, leaving out `self_id`.
fn neighbours(s: &dyn Index, q: &[f32], k: usize, self_id: Option<i64>) -> Answer<Value> {
    let hits = s.nearest(q, k + 1)?;
    let list: Vec<Value> = hits
        .into_iter()
        .filter(|h| Some(h.0) != self_id)
        .take(k)
        .map(|(id, d, p)| json!({"id": id, "distance": d, "name": name_of(&p), "path": p.to_string_lossy()}))
        .collect();
    Ok(json!({ "neighbours": list }))
}

async fn by_id(
    State(g): State<Arc<Gallery>>,
    UrlPath(id): UrlPath<i64>,
    Query(k): Query<K>,
) -> Answer<Json<Value>> {
    blocking(&g, move |g| {
        g.with(|s| {
            let (path, v) = s.row_of(id)?.ok_or_else(|| not_found(id))?;
            let mut out = neighbours(s, &v, k.get(), Some(id))?;
            out["query"] =
                json!({"id": id, "name": name_of(&path), "path": path.to_string_lossy()});
            Ok(Json(out))
        })
    })
    .await
}

async fn upload(
    State(g): State<Arc<Gallery>>,
    Query(k): Query<K>,
    body: Bytes,
) -> Answer<Json<Value>> {
    blocking(&g, move |g| {
        let mut slot = g.embedder.lock().expect("embedder lock");
        if slot.is_none() {
            *slot = Some(g.with(|s| {
                let model = s.model()?;
                let e = Embedder::open(&model, &g.embed)?;
                s.check_model(&model, &e.manifest)?;
                Ok(e)
            })?);
        }
        let e = slot.as_mut().expect("opened above");
        let input = crate::imaging::input_from_bytes(
            &body,
            Path::new("the uploaded image"),
            &e.manifest.preprocess,
            g.max_pixels,
        )?;
        let v = e.run(&input.tensor, 1, false)?.fc7;
        drop(slot);
        let mut out = g.with(|s| neighbours(s, &v, k.get(), None))?;
        out["query"] = json!({"id": null, "name": "uploaded image"});
        Ok(Json(out))
    })
    .await
}

#[derive(Deserialize)]
struct Page {
    after: Option<i64>,
    limit: Option<usize>,
}

async fn browse(State(g): State<Arc<Gallery>>, Query(p): Query<Page>) -> Answer<Json<Value>> {
    blocking(&g, move |g| {
        let rows = g.with(|s| Ok(s.page(p.after.unwrap_or(0), p.limit.unwrap_or(60).min(500))?))?;
        let list: Vec<Value> = rows
            .into_iter()
            .map(|(id, p)| json!({"id": id, "name": name_of(&p)}))
            .collect();
        Ok(Json(json!({ "images": list })))
    })
    .await
}

async fn info(State(g): State<Arc<Gallery>>) -> Answer<Json<Value>> {
    blocking(&g, |g| {
        g.with(|c| {
            let model = c.meta(Meta::ModelPath)?;
            let metrics = model
                .as_deref()
                .and_then(|m| crate::model::manifest::read_manifest(Path::new(m)).ok())
                .map(|m| json!({"classes": m.classes, "provenance": m.provenance}));
            Ok(Json(json!({
                "index": c.location(),
                "indexed": c.count()?,
                "model": model,
                "manifest": metrics,
                "figure4": c.meta(Meta::Figure4)?.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
            })))
        })
    })
    .await
}

async fn thumb(State(g): State<Arc<Gallery>>, UrlPath(id): UrlPath<i64>) -> Answer<Response> {
    blocking(&g, move |g| {
        let path = g.with(|s| s.path_of(id)?.ok_or_else(|| not_found(id)))?;
        let jpeg = g.thumbs.get(id, &path, g.max_pixels)?;
        Ok(([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response())
    })
    .await
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

fn router(g: Arc<Gallery>, token: Option<String>) -> Router {
    let guarded = Router::new()
        .route("/", get(page))
        .route("/api/info", get(info))
        .route("/api/images", get(browse))
        .route("/api/neighbours/{id}", get(by_id))
        .route("/api/query", post(upload))
        .route("/thumb/{id}", get(thumb))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(g);
    match token {
        Some(t) => guarded.layer(axum::middleware::from_fn_with_state(
            Arc::new(t),
            token::check,
        )),
        None => guarded,
    }
}

/// Serves the gallery until `stop` is set; `ready` is told the address it listens on.
pub fn run(
    opts: ServeOptions,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let source = match &opts.index {
        Location::Folder(dir) => Source::Folder(Mutex::new(Store::open_read(dir)?)),
        Location::Postgres(url) => Source::Postgres(Box::new(PgIndex::open_read(url)?)),
    };
    let key = match (&source, &opts.index) {
        (Source::Postgres(pg), _) => pg.location(),
        (_, Location::Folder(dir)) => std::path::absolute(dir)
            .unwrap_or(dir.clone())
            .display()
            .to_string(),
        (_, Location::Postgres(url)) => url.clone(),
    };
    let token = opts.token.clone();
    let g = Arc::new(Gallery {
        thumbs: thumbs::Thumbs::for_index(&key),
        source,
        embedder: Mutex::new(None),
        embed: opts.embed,
        max_pixels: opts.max_pixels,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the server's runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", opts.addr)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        ready(addr);
        let stopped = async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        axum::serve(listener, router(g, token))
            .with_graceful_shutdown(stopped)
            .await
            .map_err(|e| Error::Invalid(format!("server stopped: {e}")))
    })
}
